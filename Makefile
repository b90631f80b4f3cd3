# Two commands a newcomer needs: `make repro` (set up, run the pipeline) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro demo test test-slow bench mlflow-ui clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml; use pip (not uv/poetry),
# which on our machines takes them from the local wheel cache.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[pipeline,test]"
	touch $@

setup: $(VENV)/.installed

# --keep-going: a stage whose data this machine lacks (say, no cats-vs-dogs folder) fails alone.
repro: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro --keep-going

DEMO_STAGES := $(foreach e,spiral_linear spiral_mlp mnist_fc mnist_cnn mnist_fc_perm mnist_cnn_perm,evaluate@$(e))
# The spiral and MNIST experiments on generated MNIST-shaped data: no download, a few minutes on 2 CPU cores.
demo: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc exp run -S datasets.mnist.acquire.source=synthetic $(DEMO_STAGES)

# One worker per core; --dist loadfile keeps a file's tests together, so each module-scoped
# DVC project (test_pipeline, test_transfer) is built once.
test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -n auto --dist loadfile

# Real-data checks outside CI (real MNIST through ../shared/data as the mirror).
test-slow: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m slow

# The engine against the course's DataLoader loop, side by side; writes reports/bench.{md,json}.
bench: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m cnnlab.bench

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db)

clean-venv:
	rm -rf $(VENV)
