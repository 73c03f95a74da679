# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint docs bench soak fast fast-clean clean

# PYTHONWARNINGS: setuptools tells every editable install of a package-dir layout to
# mind same-named folders (an InformationOnly warning): known, nothing to act on.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/iommusim run

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest -n auto --dist worksteal

# The documentation site (docs/, mkdocs.yml) built into site/; strict: a broken link fails.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Optional: the page-table code compiled with mypyc (README, Performance); needs a C
# compiler. Used while it matches the sources, else the pure package (tables.compiled);
# IOMMUSIM_TABLES=pure|compiled|auto chooses. `make fast-clean` removes it.
FAST = $(BIN)/python -c 'import sys; from iommusim.tables.compiled import main; sys.exit(main(sys.argv[1:]))'
fast: $(STAMP)
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/pip install --quiet -e '.[test,fast]'
	$(FAST) build

fast-clean: $(STAMP)
	$(FAST) clean

# The soak tier (docs/tests.md): 100,000 operations, 1.2 million checked DMAs, every oracle
# on; many minutes. `python -m benchmarks.soak --quick` is the small size a test runs.
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache
