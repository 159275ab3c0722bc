# Two commands matter: `make demo` and `make test`. Everything else is plumbing.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR := $(CURDIR)/.cache/ultralytics
export MPLBACKEND := Agg
export PYTHONUTF8 := 1

.PHONY: venv demo test test-full lint format clean-demo chromium gpu-check gpu-pkgs notebook

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "make venv: $(PY) not found (Python 3.11 is required); set PY=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q "pip>=23" "setuptools>=77" wheel
	$(BIN)/pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation -c constraints.txt sam2==1.1.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,baselines,cluster,loggers]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	$(BIN)/python tools/demo.py

chromium:  # Debian's Chromium for the report browser tests (Playwright drives it and downloads no browser)
	@test -x /usr/bin/chromium || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

test: venv chromium
	$(BIN)/python -m pytest -m "not slow" -q

test-full: venv chromium
	$(BIN)/python -m pytest -q

# re-executes notebooks/quickstart.ipynb in place (its outputs are committed; tests/test_notebook.py compares)
notebook: venv
	$(BIN)/python tools/execute_notebook.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# GPU path (docs/GPU.md). gpu-check needs no venv: the device has torch but no venv, so it runs $(PY) when
# given on the command line (make gpu-check PY=python3), else .venv's python, else python3, with the
# packages `make gpu-pkgs` copied into .gpu_pkgs/ on PYTHONPATH. Without CUDA: one line, exit 0.
GPU_PY = $(if $(filter command line,$(origin PY)),$(PY),$(if $(wildcard $(BIN)/python),$(BIN)/python,python3))
gpu-check:
	@PYTHONPATH=$(CURDIR)/.gpu_pkgs:$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PY) tools/gpu_check.py $(GPU_CHECK_ARGS)

gpu-pkgs: venv
	rm -rf .gpu_pkgs
	$(BIN)/python tools/gpu_check.py --copy-pkgs .gpu_pkgs
