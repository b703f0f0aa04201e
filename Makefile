# Thin wrappers, nothing hidden: each target is the command you could type yourself.
#   make run    serve the exchange (settings: environment variables, see config/example.env)
#   make run-ray  the same across processes, on Ray (ENGINE=ray; README "Running on Ray")
#   make test   the test suite          make lint   ruff check + format check
#   make bench  the benchmarks (ENGINE=ray's too)   make clean  remove caches and build output

# Python 3.11 exactly (pyproject: requires-python >=3.11,<3.12). Prefer `python3.11`;
# fall back to `python3`, whose version the install step checks.
PYTHON ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
RAY_STAMP := $(VENV)/.installed-ray
RUN_RAY_STAMP := $(VENV)/.installed-run-ray

.PHONY: run run-ray test lint bench clean distclean

# (Re)install whenever the dependencies change; a stamp records the last install.
# `make run` installs the runtime dependencies only; tests, lint and bench add the dev extra.
define venv
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	  echo "error: Python 3.11 is required, but PYTHON=$(PYTHON) is not (or is missing)." >&2; \
	  echo "       Install python3.11 or run: make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
	  echo "error: $(VENV) was made with another Python than 3.11; run: make distclean" >&2; exit 1; }
endef

$(RUN_STAMP): pyproject.toml constraints.txt
	$(venv)
	$(VENV)/bin/pip install -c constraints.txt -e .
	touch $@

$(STAMP): pyproject.toml constraints.txt
	$(venv)
	$(VENV)/bin/pip install -c constraints.txt -e '.[dev]'
	@# the dev install holds the runtime one: `make run` needs no install after it
	touch $@ $(RUN_STAMP)

# The ray extra (ENGINE=ray: docs/ray.md): `make run-ray` installs it with the runtime
# dependencies, `make test` with dev too (its tests run real Ray processes); `make run`
# never does.
$(RUN_RAY_STAMP): pyproject.toml constraints.txt
	$(venv)
	$(VENV)/bin/pip install -c constraints.txt -e '.[ray]'
	touch $@ $(RUN_STAMP)

$(RAY_STAMP): pyproject.toml constraints.txt
	$(venv)
	$(VENV)/bin/pip install -c constraints.txt -e '.[dev,ray]'
	touch $@ $(STAMP) $(RUN_STAMP) $(RUN_RAY_STAMP)

run: $(RUN_STAMP)
	exec $(VENV)/bin/gunicorn -c config/gunicorn.conf.py

# a local Ray head, the sequencer and the shards, then gunicorn with WORKERS workers
run-ray: $(RUN_RAY_STAMP)
	exec $(VENV)/bin/python -m miniexchange.cluster.serve

test: $(RAY_STAMP)
	bash scripts/test-deps
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(RAY_STAMP)
	$(VENV)/bin/python -m bench

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis test-artifacts
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# clean, and the virtual environment too (the next target reinstalls it).
distclean: clean
	rm -rf $(VENV)
