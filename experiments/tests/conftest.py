"""The record's tests: run with `python -m pytest experiments/tests` (not part of `make test`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # `import levers`
