# asgi-deploy: every target creates .venv and installs the locked dependencies by itself.
# APP_* variables in the environment pass straight through to the service.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION ?= 0.13.9
VENV := .venv
TOOLS := .tools
# A pinned uv, bootstrapped with pip into .tools/ (override: make UV=uv ...).
UV ?= $(TOOLS)/bin/uv
RUN := $(VENV)/bin/python
BASE_URL ?=
PYTEST_ARGS ?=

export UV_PYTHON_DOWNLOADS := never

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

.PHONY: venv-run venv-dev
venv-run: | $(UV) ## Install the locked runtime dependencies into .venv
	@$(UV) sync --locked --no-dev --inexact --quiet

venv-dev: | $(UV) ## Install runtime and development dependencies into .venv
	@$(UV) sync --locked --quiet

.PHONY: run run-uvicorn run-hypercorn run-gunicorn run-gunicorn-asgi run-granian
run: venv-run ## Run the server named by APP_SERVER (default uvicorn)
	exec $(RUN) -m deploy

run-uvicorn: venv-run ## Run the service under Uvicorn
	exec $(RUN) -m deploy uvicorn

run-hypercorn: venv-run ## Run the service under Hypercorn
	exec $(RUN) -m deploy hypercorn

run-gunicorn: venv-run ## Run the service under Gunicorn with Uvicorn workers
	exec $(RUN) -m deploy gunicorn

run-gunicorn-asgi: venv-run ## Run the service under Gunicorn's own ASGI worker
	exec $(RUN) -m deploy gunicorn-asgi

run-granian: venv-run ## Run the service under Granian
	exec $(RUN) -m deploy granian

.PHONY: config
config: venv-run ## Print effective settings and native server config (PROFILE=uvicorn|...)
	@$(RUN) -m deploy config $(PROFILE)

.PHONY: lint fmt
lint: venv-dev ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: venv-dev ## Format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: test unit smoke docs
test: lint ## Everything: lint, unit, smoke for every profile
	$(RUN) -m pytest $(PYTEST_ARGS)

unit: venv-dev ## Unit tests only
	$(RUN) -m pytest tests/unit $(PYTEST_ARGS)

smoke: venv-dev ## Smoke suite: every profile as a real process, or BASE_URL=http://host:port
	$(RUN) -m pytest tests/smoke $(if $(BASE_URL),--base-url=$(BASE_URL)) $(PYTEST_ARGS)

docs: venv-dev ## Regenerate the README settings table from the Settings class
	$(RUN) -m deploy.settings_table --write README.md

.PHONY: clean
clean: ## Remove the virtual environments and caches
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
