# gaussmix: `make demo` runs the main job, `make test` runs the test suite.
# Each sets up .venv by itself (Python >= 3.12, pinned by constraints.txt).

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint format venv constraints clean bench docs

demo: $(STAMP)
	$(PY) -m gaussmix.cli demo --out demo

# The suite runs in a random order (seed printed in the header; rerun one order with
# make test PYTEST_ARGS="--randomly-seed=N") on TEST_WORKERS processes (pytest-xdist: most
# of the suite's time is single-threaded XLA compilation, so two workers use both cores
# of a 2-core machine; TEST_WORKERS=0 runs in this process).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -p randomly -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/find_python.sh
	@python=$$(scripts/find_python.sh) || exit 1; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then \
		rm -rf $(VENV); echo "creating $(VENV) with $$python"; "$$python" -m venv $(VENV) || exit 1; \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# Refresh constraints.txt to the newest releases that resolve; run `make test` after it
# and commit both together only when the suite passes.
constraints:
	@python=$$(scripts/find_python.sh) || exit 1; \
	rm -rf .venv-refresh && "$$python" -m venv .venv-refresh && \
	.venv-refresh/bin/python -m pip install --quiet --upgrade pip && \
	.venv-refresh/bin/python -m pip install --quiet '.[dev]' && \
	.venv-refresh/bin/python -m pip freeze --exclude gaussmix > constraints.txt && \
	rm -rf .venv-refresh && echo "constraints.txt refreshed; now run make test"

bench: $(STAMP)
	$(PY) benchmarks/em.py

# The site (docs/): API reference, guides, the CLI's help and the gallery (every
# examples/*.py run in its --quick mode) into docs/_build/html; warnings are errors.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) demo build dist *.egg-info .pytest_cache .ruff_cache docs/_build docs/gallery_examples
