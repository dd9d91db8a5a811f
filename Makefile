# Quick start: `make demo` (venv + package + offline encoder + zero-shot demo), then `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export SPACY_CONCEPT_ALIGN_UD ?= $(abspath ../shared/ud)

.PHONY: install encoder demo test test-fast evaluate clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the CPU wheel (any other resolution pulls a multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

encoder: install
	$(PY) -m spacy_concept_align encoder build

demo: encoder
	$(PY) -m spacy_concept_align demo

# Everything, what CI runs: tests marked slow too (the real offline encoder, subprocesses that build venvs and
# wheels, Ray, whole treebanks).
test: encoder
	$(PY) -m pytest tests -q -ra

# The fast tier (under a minute on 2 cores): every test not marked slow; plumbing on tiny random transformers and the
# small UD samples in tests/data, never the real encoder (tests/conftest.py fails a test that loads it unmarked).
# Needs only the venv (made if missing; an edited pyproject.toml does not reinstall here: `make install` does).
test-fast:
	@test -x $(PY) || $(MAKE) install
	$(PY) -m pytest tests -q -ra -m "not slow"

evaluate: encoder
	$(PY) -m spacy_concept_align evaluate --output metrics

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
