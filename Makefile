# Everything a user needs, from a fresh clone: `make train` and `make test`.
# Each target creates the virtual environment in .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXAMPLE_ARGS ?=

.PHONY: help venv train test check lint format bench mnist fashion-mnist cifar10 cluttered-mnist clean

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,examples,sweeps]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install mlproject with its dev, example and sweep extras

train: $(STAMP)  ## train the default example (MLP on scikit-learn's digits, offline) and print its test accuracy
	cd examples/digits && ../../$(PY) main.py with n_epochs=20 $(EXAMPLE_ARGS)

mnist: $(STAMP)  ## train an MLP on MNIST (downloaded into the data dir if missing)
	cd examples/mnist && ../../$(PY) main.py with n_epochs=5 $(EXAMPLE_ARGS)

fashion-mnist: $(STAMP)  ## train a small CNN on Fashion-MNIST (downloaded if missing)
	cd examples/fashion_mnist && ../../$(PY) main.py with n_epochs=10 $(EXAMPLE_ARGS)

cifar10: $(STAMP)  ## train ResNet18 on CIFAR-10, README transforms (EXAMPLE_ARGS=fast_data=True: in-memory path)
	cd examples/cifar10 && ../../$(PY) main.py with n_epochs=30 $(EXAMPLE_ARGS)

cluttered-mnist: $(STAMP)  ## train a CNN on seeded ClutteredMNIST, built from the MNIST files
	cd examples/cluttered_mnist && ../../$(PY) main.py with n_epochs=10 $(EXAMPLE_ARGS)

test: $(STAMP)  ## run the whole test suite (slow tests included), a file per worker on 2 workers
	$(PY) -m pytest -q -n 2 --dist loadfile

check: lint test  ## lint, then test

lint: $(STAMP)  ## ruff check and format check
	$(PY) -m ruff check mlproject test examples benchmarks
	$(PY) -m ruff format --check mlproject test examples benchmarks

format: $(STAMP)  ## reformat the code with ruff
	$(PY) -m ruff format mlproject test examples benchmarks
	$(PY) -m ruff check --fix mlproject test examples benchmarks

bench: $(STAMP)  ## run the benchmark scripts (they print figures, they do not fail)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
