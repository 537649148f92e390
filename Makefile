# The front door: `make demo` runs the main job, `make test` the tests; each sets up .venv first
# (once: again only when pyproject.toml changes).
VENV ?= .venv
MNIST ?= ../shared/data/mnist
PY := $(VENV)/bin/python

.PHONY: demo test lint
demo: $(VENV)/.installed  ## the main job: LeNet on real MNIST, 1 epoch, into runs/mnist*
	$(VENV)/bin/ptrain train --data-dir $(MNIST) --epochs 1

# Two pytest workers, one per core (a third is no faster); tests sharing a trained fixture stay
# on one worker (conftest), and the processes tests signal are forked (tests/forked.py).
test: lint  ## ruff, then the whole suite (CPU; CUDA tests skip without a GPU)
	$(PY) -m pytest -n 2 --dist loadgroup

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -e ".[dev]"
	touch $@
