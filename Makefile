# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast bench results

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/steer-lens demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist worksteal --durations=25

test-fast: setup
	$(PY) -m pytest -q -m "not integration"

bench: setup
	$(PY) benchmarks/run_all.py

results: setup
	$(PY) analyses/main_results.py
