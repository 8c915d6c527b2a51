# The two quickstart commands:  `make demo`  and  `make test`.
# Both create .venv on first use (torch 2.13.0 CPU build + tools) and build the
# kernels with `pip install --no-build-isolation -e .`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SETUP_STAMP := $(VENV)/.setup-stamp
BUILD_STAMP := $(VENV)/.build-stamp
KERNEL_SOURCES := setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh)
CMAKE_DIR := build/cmake

.PHONY: setup demo test lint ctest check-build pytest bench bench-quick reproduce clean

setup: $(BUILD_STAMP)

$(SETUP_STAMP): requirements/dev.txt requirements/constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
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

ctest: setup
	$(BIN)/cmake -S . -B $(CMAKE_DIR) -DCMAKE_PREFIX_PATH="$$($(BIN)/python -c 'import torch; print(torch.utils.cmake_prefix_path)')" > /dev/null
	$(BIN)/cmake --build $(CMAKE_DIR) -j2
	$(BIN)/ctest --test-dir $(CMAKE_DIR) --output-on-failure

# Every C++ CPU source compiled for generic x86-64 and x86-64-v3 with warnings as
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

# The paper's Scientific set (docs/RESULTS.md): Table 1 (4 backbones x 5) + the Table 2
# ablation with item ids as the backbone's item features; the same with id + category
# features (DIN left out for time); two more seeds of SASRec's APG/DUET rows in both
# settings. About 2.5 hours on 2 cores; resumable (finished runs are skipped). Not in CI.
REPRO = $(BIN)/solidrec reproduce --data runs/data/scientific --epochs 8 --patience 2 --workers 2
HEADLINE = --backbones sasrec --combos apg:off apg:full duet:off duet:full --seeds 2025 2026
CATEGORY = --set model.item_features=id+category
reproduce: setup
	$(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific --out runs/data/scientific
	$(REPRO) --out runs/repro --seeds 2024
	$(REPRO) --out runs/repro-cat --seeds 2024 --backbones sasrec gru4rec bert4rec $(CATEGORY)
	$(REPRO) --out runs/repro $(HEADLINE)
	$(REPRO) --out runs/repro-cat $(HEADLINE) $(CATEGORY)
	$(BIN)/solidrec report runs/repro --out docs/results_table.md
	$(BIN)/solidrec report runs/repro-cat --no-paper --out docs/results_table_category.md

clean:
	rm -rf build $(CMAKE_DIR) *.egg-info $(BUILD_STAMP)
