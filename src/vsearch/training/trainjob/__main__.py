"""``python -m vsearch.training.trainjob``: a bad spec or config exits 2 with one line."""

import sys

from vsearch.config import ConfigError
from vsearch.schema import DataError
from vsearch.training.trainjob.cli import main

try:
    sys.exit(main())
except (ConfigError, DataError) as err:
    print(f"vsearch.training.trainjob: error: {err}", file=sys.stderr)
    sys.exit(2)
