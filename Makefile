# The two quickstart commands:  `make demo`  and  `make test`.
# Both create .venv on first use (torch 2.13.0 CPU build + tools) and build the
# kernels with `pip install --no-build-isolation -e .`.
# The paper's tables and studies (data in ../shared/data): `make -f research.mk TARGET`.
PY ?= python3
# Extra pip arguments for torch, e.g. --index-url https://download.pytorch.org/whl/cpu
TORCH_PIP_ARGS ?=
VENV ?= .venv
BIN := $(VENV)/bin
SETUP_STAMP := $(VENV)/.setup-stamp
BUILD_STAMP := $(VENV)/.build-stamp
KERNEL_SOURCES := setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh)
CMAKE_DIR := build/cmake

.PHONY: setup demo test lint ctest check-build pytest bench bench-quick clean

setup: $(BUILD_STAMP)

$(SETUP_STAMP): requirements/dev.txt requirements/constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -r requirements/dev.txt
	touch $@

$(BUILD_STAMP): $(SETUP_STAMP) $(KERNEL_SOURCES)
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

# The main job: a short tour of the fused ops, then the recommender on the embedded
# synthetic default (generate, prepare, train DUET and SOLID(DUET) on SASRec, print
# the metrics table).
demo: setup
	$(BIN)/python -m solid_ext.demo
	$(BIN)/solidrec quickstart --out runs/quickstart

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

ctest: setup
	$(BIN)/cmake -S . -B $(CMAKE_DIR) -DCMAKE_PREFIX_PATH="$$($(BIN)/python -c 'import torch; print(torch.utils.cmake_prefix_path)')" > /dev/null
	$(BIN)/cmake --build $(CMAKE_DIR) -j2
	$(BIN)/ctest --test-dir $(CMAKE_DIR) --output-on-failure

# Every C++ CPU kernel source compiled for generic x86-64 and x86-64-v3 (torch-facing
# sources for x86-64) with warnings as
# errors, and the per-ISA kernel objects checked to export only their own namespace.
check-build: setup
	$(BIN)/python tools/check_cpu_build.py

pytest: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

test: lint ctest check-build pytest

bench: setup
	$(BIN)/python -m benchmarks.run --out benchmarks/results

# Writes benchmarks/results-quick/BENCHMARKS.md; only the full run rewrites the tracked
# BENCHMARKS.md.
bench-quick: setup
	$(BIN)/python -m benchmarks.run --quick --out benchmarks/results-quick

clean:
	rm -rf build $(CMAKE_DIR) *.egg-info $(BUILD_STAMP)
