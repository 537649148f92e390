# The front door: `make demo` runs the main job, `make test` the tests; each sets up .venv first
# (once: again only when pyproject.toml changes).
VENV ?= .venv
MNIST ?= ../shared/data/mnist
PY := $(VENV)/bin/python

.PHONY: demo test test-slow test-all lint gpu-versions
demo: $(VENV)/.installed  ## the main job: LeNet on real MNIST, 1 epoch, into runs/mnist*
	$(VENV)/bin/ptrain train --data-dir $(MNIST) --epochs 1

# Two pytest workers, one per core (a third is slower), one intra-op thread each: two threads a
# worker oversubscribe the 2 cores (the suite: 269 s against 372 s, and 304 against 339, in two
# pairs of runs back to back). Tests
# sharing a trained fixture stay on one worker (conftest); the processes tests signal are forked
# (tests/forked.py).
# `make test` leaves out the tests marked slow (pyproject.toml: whole systems of processes,
# measures of the machine, the 3 heaviest recipes), 40 of them, about half the suite's time;
# `make test-slow` runs them, `make test-all` both, and CI (.ci/run) both.
test: lint  ## ruff, then the suite but its slow tests (CPU; CUDA tests skip without a GPU)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup -m "not slow"

test-slow: $(VENV)/.installed  ## the slow tests alone
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup -m slow

test-all: test test-slow  ## the whole suite

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -e ".[dev]"
	touch $@

# The GPU machine's own versions on this CPU: Python 3.12, torch 2.11.0, torchvision 0.26.0 (the
# device's KINDS.md), where ptrain must run as it is. The suite again, then the GPU check's dry
# run; CI runs it after `test`. About 5 GB of CUDA wheels, once.
GPU_VENV ?= .venv-gpu
GPU_PY := $(GPU_VENV)/bin/python
# pyenv's 3.12 where there is one (its shim refuses while 3.11 is the global version)
GPU_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3)
GPU_TORCH := torch==2.11.0 torchvision==0.26.0
gpu-versions: $(GPU_VENV)/.installed  ## the suite and the GPU check's dry run on torch 2.11
	$(GPU_PY) -c "import sys, torch; print('Python', sys.version.split()[0], 'torch', torch.__version__)"
	OMP_NUM_THREADS=1 $(GPU_PY) -m pytest -n 2 --dist loadgroup -p no:cacheprovider
	out=$$(mktemp -d) && PYTHON=$(GPU_PY) bash benchmarks/gpu_check.sh --device cpu --quick \
	    --out $$out || { cat $$out/log.txt; exit 1; }; $(GPU_PY) benchmarks/check_gpu_out.py $$out

$(GPU_VENV)/.installed: pyproject.toml
	$(GPU_PYTHON) -m venv $(GPU_VENV)
	$(GPU_PY) -m pip install $(GPU_TORCH)
	$(GPU_PY) -m pip install -e ".[dev]" $(GPU_TORCH)
	touch $@
