# Two entry points for a fresh machine: `make demo` and `make test`. Each creates or refreshes
# the local virtual environment in .venv first (re-installed when setup.py or this file change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

DOCS_STAMP := $(VENV)/.docs-stamp

.PHONY: venv test test-fast demo bench docs clean

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# The README's install command (`pip install keras-resnest`, here from the checkout) plus
	# the test extra (pytest and the torch reference); nothing installed beside it.
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

# Two workers, one test file each at a time (module fixtures are built once; tests/conftest.py
# hands out the longest files first): much of the suite waits on subprocess start-up and
# single-threaded dispatch, so two share two cores well (a clean-clone run: 36 min of tests
# against 45-51 min serially, on the 2-core machine). The slowest tests are listed at the end.
test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=30 tests

# The tests not marked `slow` (pyproject.toml): no training runs, subprocess pipelines,
# packaging or other Keras backends; a check to run while editing. `make test` runs them all.
test-fast: venv
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 -m "not slow" tests

# Options of the demo (`python -m keras_resnest.commands.demo --help`) go in DEMO_ARGS, e.g.
# make demo DEMO_ARGS="--strategy mirrored".
demo: venv
	$(PY) -c 'import sys, keras_resnest_cli; sys.exit(keras_resnest_cli.demo())' $(DEMO_ARGS)

bench: venv
	$(PY) -m benchmarks.inference

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on any warning, such as
# a broken link or an API entry that does not resolve. It needs the package (the API reference
# imports it) and the docs extra only, not the test extra's torch, JAX, Beam and OpenVINO: a
# .venv that `make test` built has both already and this install finds nothing to do.
$(DOCS_STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache site
