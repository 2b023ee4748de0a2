# STZoo: `make demo` runs the main job on the embedded default, `make test` runs the tests.
# Both set up .venv first (idempotent: re-run only when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONUNBUFFERED := 1

.PHONY: setup test test-fast demo down clean components bench gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and torchvision as a matching pair first: any other torchvision breaks `import transformers`.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Two pytest workers: much of the suite waits on servers and subprocesses, which the other worker fills.
# Each module runs on one worker, the Ray-head modules together (tests/conftest.py's scheduler).
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

components: setup
	$(BIN)/stzoo components

demo: setup
	$(BIN)/python -m zoo.launch.demo

bench: setup
	$(BIN)/python -m benchmarks.run_all

# On a lent GPU: writes benchmarks/gpu_results.md. `make gpu-check DRY_RUN=1` runs it on the CPU at tiny sizes
# (make's own --dry-run flag would only print the command).
gpu-check: setup
	$(BIN)/python -m benchmarks.gpu_check $(if $(DRY_RUN),--dry-run,)

down: setup
	$(BIN)/python -m zoo.launch.demo --down

clean:
	rm -rf $(VENV) .stzoo runs
