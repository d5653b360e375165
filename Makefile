# Quick start: `make demo` and `make test`. Both create .venv when it is missing and install
# exactly the locked set (requirements.lock); `make lock` refreshes the lock after a change to
# pyproject.toml's ranges.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.feldspar-installed
LOCK := requirements.lock
# torch 2.13.0+cpu is the CPU wheel (on PyTorch's CPU index, and on disk on this project's
# machines); an unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0+cpu
TORCH_WHEELS ?= /opt/wheels
UV := uv==0.13.8

.PHONY: demo test install lock test-floor clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=25'
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

# The lock: every package with its hashes, resolved for CPython 3.11 on Linux x86_64.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(UV)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra postgres --generate-hashes \
	  --python-version 3.11 --find-links $(TORCH_WHEELS) --constraint <(echo '$(TORCH)') \
	  --no-header --annotation-style line --quiet -o $(LOCK)

# The model layer on the floor release of transformers (pyproject's lower bound), beside the
# locked set: a side venv that sees .venv's packages but its own transformers.
FLOOR_VENV := .venv-floor
TRANSFORMERS_FLOOR := transformers==5.23.0
test-floor: $(STAMP)
	test -x $(FLOOR_VENV)/bin/python || $(PYTHON) -m venv $(FLOOR_VENV)
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
	  > $(FLOOR_VENV)/lib/python3.11/site-packages/_locked_set.pth
	$(FLOOR_VENV)/bin/python -m pip install -q --no-deps $(TRANSFORMERS_FLOOR)
	$(FLOOR_VENV)/bin/python -m pip install -q --no-deps -e .
	$(FLOOR_VENV)/bin/python -m pytest -q tests/model

demo: $(STAMP)
	$(VENV)/bin/feldspar demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .pytest_cache
