# The course in two commands:  `make lab`  and  `make test`.
# Both create .venv and install the course into it when it is missing or when
# pyproject.toml changed since the last install; a second run reinstalls nothing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Two pytest workers match CI's two cores; loadfile keeps each notebook in one kernel.
PYTEST_WORKERS ?= 2

.PHONY: lab test env exercises notebooks bench clean help

help:
	@echo "make lab        open the course in JupyterLab (creates .venv if needed)"
	@echo "make test       run every test: library, notebooks, exercises (creates .venv if needed)"
	@echo "make exercises  regenerate exercises/ from solutions/"
	@echo "make notebooks  re-execute every notebook and solution in place (authors only)"
	@echo "make bench      run the CPU benchmarks in benchmarks/"

env: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0] + ". Run: make PYTHON=/path/to/python3.11 test")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" notebooks/00_start_here.ipynb

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile \
		--nbval --nbval-current-env --nbval-cell-timeout=1200 \
		--nbval-sanitize-with tests/nbval_sanitize.cfg \
		tests notebooks solutions

exercises: $(STAMP)
	$(BIN)/python -m unetlib.exercises

notebooks: $(STAMP)
	for nb in notebooks/*.ipynb solutions/*.ipynb; do \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=1800 "$$nb" || exit 1; \
	done

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_elastic.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) .pytest_cache runs
