# Two entry points for a fresh machine: `make demo` and `make test`. Each creates or refreshes
# the local virtual environment in .venv first (re-installed when setup.py or this file change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv test demo bench clean

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e ".[test]"
	# Reference implementation for the parity tests: its own dependencies are torch/numpy only.
	$(PY) -m pip install -q --no-deps resnest==0.0.5
	# TF-Serving client protos (export warm-up records, serve-request): the wheel pins the full
	# `tensorflow` package, so install it without deps; grpcio and protobuf are its real deps.
	$(PY) -m pip install -q "grpcio>=1.24.3,<2" "protobuf>=6.31.1,<8"
	$(PY) -m pip install -q --no-deps "tensorflow-serving-api==2.21.*"
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(PY) -m pytest -q tests

demo: venv
	$(PY) -m keras_resnest.demo

bench: venv
	$(PY) benchmarks/inference.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
