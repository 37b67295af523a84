# adrun developer commands. `make help` lists them.
# Every target creates .venv and installs what it needs, idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The torch build for this project's machines: PyPI's default, which brings CUDA libraries
# (about 5 GB installed) even where there is no GPU. Override it, e.g. for the CPU-only build
# (PyTorch's own index; this project's machines cannot reach it):
#   make demo TORCH_SPEC="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: help setup demo demo-quick seeds test test-full check typecheck smoke lint readme clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-11s %s\n", $$1, $$2}'

# adrun alone: all the demo needs.
$(BASE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e .
	touch $@

# Plus the test tools and the optional extras the suite exercises (Ray, export).
$(DEV): $(BASE)
	$(BIN)/python -m pip install -q -e '.[test,ray,export]'
	touch $@

setup: $(DEV) ## Create .venv and install adrun with its test tools, Ray and the export extra

demo: $(BASE) ## Run the offline demo (synthetic data, both models, 3 categories) -> results/demo (report.html)
	$(BIN)/adrun sweep configs/demo.yaml
	$(BIN)/adrun table results/demo --compare assignment

demo-quick: $(BASE) ## Patchcore alone on the demo's data (3 categories) -> results/demo-quick
	$(BIN)/adrun sweep configs/demo.yaml --only patchcore --set name=demo-quick

seeds: $(BASE) ## Run configs/seeds.yaml (Patchcore, three seeds, offline) -> results/seeds
	$(BIN)/adrun sweep configs/seeds.yaml

test: $(DEV) ## Fast inner loop: every test not marked slow or ray (about a minute)
	$(BIN)/python -m pytest -m "not slow and not ray"

test-full: $(DEV) ## The whole suite, real fits and the Ray cluster included (what CI runs)
	$(BIN)/python -m pytest

check: $(DEV) ## What CI checks besides the tests: ruff check, ruff format, mypy and the README's help block
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy src/adrun
	$(BIN)/python scripts/readme_table.py --check-help

typecheck: $(DEV) ## mypy src/adrun alone
	$(BIN)/mypy src/adrun

smoke: $(DEV) ## Smoke-run every shipped config on synthetic data (offline weights)
	$(BIN)/python -m pytest tests/test_smoke_configs.py

lint: $(DEV) ## ruff check and ruff format (fixes what it can)
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

readme: ## Put the demo's (and results/seeds') real pixel-AUROC table into README.md (after make demo, make seeds)
	$(BIN)/python scripts/readme_table.py

clean: ## Remove results and caches (keeps .venv)
	rm -rf results/demo results/demo-quick results/seeds results/smoke .pytest_cache
