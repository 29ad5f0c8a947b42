# dysonsgd: the two entry points are `make run` and `make test` (see README.md); `make docs`
# builds the documentation site.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: venv run test test-slow lint docs bench clean

$(BIN)/dysonsgd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch==2.13.0 first: it resolves to the CPU wheel on these machines (never the CUDA build)
	$(BIN)/pip install --quiet torch==2.13.0
	# torch pinned again so that no dependency of the extras can move it
	$(BIN)/pip install --quiet -e ".[dev]" torch==2.13.0
	touch $@

venv: $(BIN)/dysonsgd

run: venv
	$(BIN)/dysonsgd validate

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: venv
	$(BIN)/python -m pytest -m slow -q

# the site (MkDocs Material, API pages from the docstrings, the executed theory notebooks) in
# site/; --strict: a broken link or anchor or a docstring that does not parse fails the build
docs: venv
	$(BIN)/mkdocs build --strict

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis site .cache
