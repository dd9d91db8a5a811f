# Quick start: `make demo` (venv + package + offline encoder + zero-shot demo), then `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export SPACY_CONCEPT_ALIGN_UD ?= $(abspath ../shared/ud)

.PHONY: install encoder demo test evaluate clean

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

test: encoder
	$(PY) -m pytest tests -q -ra

evaluate: encoder
	$(PY) -m spacy_concept_align evaluate --output metrics

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
