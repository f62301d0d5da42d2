# The two commands of a fresh clone:  make train  (the ranking recipe)  and  make test.
# Each creates the virtual environment .venv and installs pyproject.toml's dependencies
# the first time (and again whenever pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: train test lint reproduce tables benchmark clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable ".[test]"
	touch $(INSTALLED)

train: $(INSTALLED)  ## the ranking recipe on its offline default data
	$(BIN)/python recipes/ranking/train.py $(ARGS)

# One pytest worker more than cores: about a third of the suite waits on the processes it
# starts (workers, kill-and-resume, fresh-process loading), and the spare worker keeps
# both cores busy meanwhile (2 cores: 443 s with 3 workers).
WORKERS ?= $(shell $(PYTHON) -c "import os; print((os.cpu_count() or 1) + 1)")

test: $(INSTALLED)  ## the linter (ruff), then every test, one test file per worker; no network
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile $(ARGS)

lint: $(INSTALLED)  ## ruff alone
	$(BIN)/ruff check .

reproduce: $(INSTALLED)  ## re-run the published configs and compare: make reproduce ARGS=ranking
	$(BIN)/python scripts/reproduce.py $(ARGS)

tables: $(INSTALLED)  ## regenerate the README tables from results/
	$(BIN)/python scripts/make_tables.py

benchmark: $(INSTALLED)  ## make benchmark ARGS=losses  or  ARGS=ranking
	$(BIN)/python scripts/benchmark.py $(ARGS)

clean:
	rm -rf $(VENV) runs
