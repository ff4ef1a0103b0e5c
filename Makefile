# The course in two commands:  `make lab`  and  `make test`.
# Both create .venv and install the course into it when it is missing or when
# pyproject.toml changed since the last install; a second run reinstalls nothing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Two pytest workers match CI's two cores; loadfile keeps each notebook in one kernel.
PYTEST_WORKERS ?= 2
# Extra pytest options, e.g. make test PYTEST_ARGS='--durations=20 -x'
PYTEST_ARGS ?=

# The same computation an AVX2-only CPU without bf16 does (most laptops and CI runners), on any
# x86-64 machine: PyTorch's and oneDNN's kernels capped at AVX2, and float32 instead of bf16.
PORTABLE_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 UNETLIB_CPU_BF16=0
PYTEST_ALL = $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile \
	--nbval --nbval-current-env --nbval-cell-timeout=1200 \
	--nbval-sanitize-with tests/nbval_sanitize.cfg \
	$(PYTEST_ARGS) tests notebooks solutions

.PHONY: lab test test-portable env exercises notebooks bench clean help

help:
	@echo "make lab        open the course in JupyterLab (creates .venv if needed)"
	@echo "make test       run every test: library, notebooks, exercises (creates .venv if needed)"
	@echo "make test-portable  the same tests computed as on an AVX2-only CPU without bf16"
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
	$(PYTEST_ALL)

# Stored notebook outputs must not depend on the CPU: run this before committing a notebook.
test-portable: $(STAMP)
	$(PORTABLE_ENV) $(PYTEST_ALL)

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
