# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ablab-installed
DEMO_STAMP := $(VENV)/.ablab-demo-installed
WORKERS ?= 2
TORCH := torch==2.13.0

.PHONY: demo test test-fast bench clean test-gpu gpu-tests gpu-study

# the test environment: the package with its test extras (pytest, selenium, Ray, pyarrow) and torchattacks
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned to the CPU build this machine has offline; a bare `torch` pulls CUDA
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test]"
	# torchattacks checks our attacks (seed 002 ch. 3); it declares torchvision (no CPU build here) but never imports it
	$(PY) -m pip install --quiet --no-deps "torchattacks>=3.5"
	touch $(STAMP)

# the demo needs only the package and its base dependencies: no test extras
$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e .
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/ablab run studies/quickstart.yaml --workers $(WORKERS)
	$(VENV)/bin/ablab report results/quickstart

# the whole suite in TEST_WORKERS pytest-xdist processes, a test file per process at a time (the suite sets
# OMP_NUM_THREADS=1, so each takes one core): 13:19 in a clean-clone `.ci/run` on a quiet 2-core machine (2,245
# passed, 206 skipped; 15:12 with the set-up; 2026-12-07), against 19–21 minutes in one process before
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

# without the tests marked slow: 3:58 on the quiet 2-core machine (2,191 passed, 2026-12-07)
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# On a machine with a CUDA GPU: the gpu-marked tests, then the seed-001 CPU study on cuda (into a
# temporary results folder unless GPU_RESULTS names one) and its report. `make -k test-gpu` runs the
# study even when a test fails. With a Python that has torch for CUDA and no venv wanted:
#   make test-gpu PY=python3 STAMP=     (ablab then imports from src/)
GPU_RESULTS ?=
GPU_STUDY_SET ?=
PYTEST_ARGS ?=
test-gpu: gpu-tests gpu-study

gpu-tests: $(STAMP)
	PYTHONPATH=src$${PYTHONPATH:+:$$PYTHONPATH} $(PY) -m pytest -m gpu -q -rs -p no:cacheprovider $(PYTEST_ARGS)

gpu-study: $(STAMP)
	$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu-study: no CUDA device')"
	out="$(GPU_RESULTS)"; out="$${out:-$$(mktemp -d -t ablab-gpu-study-XXXX)}"; \
	PYTHONPATH=src$${PYTHONPATH:+:$$PYTHONPATH} $(PY) -m ablab run studies/bn_dissect/cpu.yaml --set device=cuda \
	    $(GPU_STUDY_SET) --workers $(WORKERS) --out "$$out" --report

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf results .pytest_cache
