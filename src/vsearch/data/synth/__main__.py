"""``python -m vsearch.data.synth``: the same CLI as ``vsearch data synth``."""

from vsearch.data.synth.generator import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
