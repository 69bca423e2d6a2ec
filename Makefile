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
BENCH_ARGS ?=
OVERLAY ?= uvicorn
IMAGE ?= asgi-deploy:0.1.0
# The Dockerfile's default base is an official slim Python image; where no
# registry is reachable, `make base-image` builds a stand-in with debootstrap.
BASE_IMAGE ?=
KUBECTL = $(VENV)/bin/kubectl

export UV_PYTHON_DOWNLOADS := never

.PHONY: help
help: ## Show this help (colour on a terminal only)
	@if [ -t 1 ]; then on=$$'\033[36m'; off=$$'\033[0m'; else on=; off=; fi; \
	awk -v on="$$on" -v off="$$off" -v profiles="$(PROFILES)" 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.%-]+:.*## / {n++; \
		name[n] = $$1; text[n] = $$2; sub(/%/, "<profile>", name[n]); sub(/\$$\(PROFILES\)/, profiles, text[n]); \
		if (length(name[n]) > width) width = length(name[n])} \
		END {for (i = 1; i <= n; i++) printf "  %s%-*s%s  %s\n", on, width, name[i], off, text[i]}' $(MAKEFILE_LIST)

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

.PHONY: venv-run venv-dev
venv-run: | $(UV) ## Install the locked runtime dependencies into .venv
	@$(UV) sync --locked --no-dev --all-extras --inexact --quiet

venv-dev: | $(UV) ## Install runtime and development dependencies into .venv
	@$(UV) sync --locked --all-extras --quiet

# A run on this machine (make run, run-<profile>, dev) serves one worker unless APP_WORKERS is
# set in the environment, on make's command line or in .env: a laptop needs no more, and the
# rooms' default in-process broker reaches one worker only. Deployments set their own.
ONE_WORKER_UNLESS_SET = $(if $(APP_WORKERS)$(shell grep -Esq '^[[:space:]]*(export[[:space:]]+)?APP_WORKERS[[:space:]]*=' .env && echo set),,APP_WORKERS=1)

.PHONY: dev
dev: venv-run ## Development loop: APP_SERVER (default uvicorn) restarting on every saved edit (APP_RELOAD)
	APP_RELOAD=true $(ONE_WORKER_UNLESS_SET) exec $(RUN) -m deploy

# The profiles, read from their one list (deploy/profiles.py) so that make never names a server.
PROFILES := $(shell sed -n 's/^    "\([a-z0-9-]*\)": "deploy\..*",$$/\1/p' deploy/profiles.py)

.PHONY: run
run: venv-run ## Run the server named by APP_SERVER (default uvicorn), one worker unless APP_WORKERS
	$(ONE_WORKER_UNLESS_SET) exec $(RUN) -m deploy

run-%: venv-run ## Run the service under <profile>, one of: $(PROFILES)
	$(ONE_WORKER_UNLESS_SET) exec $(RUN) -m deploy $*

.PHONY: config
config: venv-run ## The settings, where each came from, what the server does (PROFILE=..., FULL=1: all, JSON)
	@$(RUN) -m deploy config $(PROFILE) $(if $(FULL),--full)

.PHONY: lint fmt
lint: venv-dev ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: venv-dev ## Format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: test unit smoke resilience docs
test: lint ## Everything .ci/run runs: lint, then every suite (unit, smoke, resilience, k8s, image)
	$(RUN) -m pytest $(PYTEST_ARGS)

unit: venv-dev ## Unit tests only
	$(RUN) -m pytest tests/unit $(PYTEST_ARGS)

resilience: venv-dev ## Resilience suite: drain, supervision, limits, hostile input on every profile
	$(RUN) -m pytest tests/resilience $(PYTEST_ARGS)

smoke: venv-dev ## Smoke suite: every profile as a real process, or BASE_URL=http://host:port
	$(RUN) -m pytest tests/smoke $(if $(BASE_URL),--base-url=$(BASE_URL)) $(PYTEST_ARGS)

docs: venv-dev ## Regenerate the generated docs, alert rules and dashboard from their one source
	$(RUN) -m deploy.settings_table --write docs/settings.md
	$(RUN) -m deploy.servers_table --write docs/servers.md
	$(RUN) -m deploy.upstream_table --write docs/upstream.md
	$(RUN) -m devkit.alert_rules --write
	$(RUN) -m devkit.dashboard --write

.PHONY: test-upstream
test-upstream: venv-dev ## Smoke + resilience suites on the newest release of every dependency; uv.lock untouched (~15 min)
	$(RUN) -m devkit.upstream --uv $(UV) -- $(PYTEST_ARGS)

.PHONY: bench bench-quick bench-tls bench-rooms
bench: venv-dev ## Benchmark every profile x app x workers side by side (not a test; ~22 min on 2 cores; wrk if installed)
	$(RUN) -m bench $(BENCH_ARGS)

bench-quick: venv-dev ## Quick benchmark: 1 worker, GET / only, 3 rounds (~3 min)
	$(RUN) -m bench --quick $(BENCH_ARGS)

bench-tls: venv-dev ## What TLS costs per profile: HTTPS/HTTP, handshakes/s, HTTP/2 (h2load if installed; ~6 min)
	$(RUN) -m bench.tls $(BENCH_ARGS)

bench-rooms: venv-dev ## Rooms fan-out on a real Redis, service beside bare FastAPI + redis-py (redis-server; ~4 min)
	$(RUN) -m bench.fanout --json docs/bench/rooms.json --markdown docs/bench/rooms.md $(BENCH_ARGS)

.PHONY: k8s-validate k8s-render deploy
k8s-validate: venv-dev ## Manifests: kustomize, strict schemas, checkov, hadolint, actionlint, consistency
	$(RUN) -m pytest tests/k8s $(PYTEST_ARGS)

k8s-render: venv-dev ## Print the rendered manifests of one overlay (OVERLAY=uvicorn|hypercorn|...)
	@$(KUBECTL) kustomize k8s/overlays/$(OVERLAY)

deploy: venv-dev ## kubectl apply -k one overlay to the current kube context (OVERLAY=...)
	$(KUBECTL) apply -k k8s/overlays/$(OVERLAY)

.PHONY: kube-play kube-down
KUBE_PLAY_PORT ?=
COMPONENTS ?=
SECRET ?=
kube-play: venv-dev ## Run one overlay's real manifests as a pod with podman, no cluster (OVERLAY=, COMPONENTS=, SECRET=)
	@$(RUN) -m devkit.kube_play up $(OVERLAY) --image $(IMAGE) $(if $(KUBE_PLAY_PORT),--port $(KUBE_PLAY_PORT)) \
		$(if $(BASE_IMAGE),--base-image $(BASE_IMAGE)) \
		$(foreach c,$(COMPONENTS),--component $(c)) $(foreach s,$(SECRET),--secret $(s))

kube-down: venv-dev ## Stop the pod make kube-play started (SIGTERM, then the manifest's grace period)
	@$(RUN) -m devkit.kube_play down

.PHONY: base-image image image-test
base-image: ## Build a local python:3.11-slim stand-in with debootstrap (root; no registry needed)
	bash deploy/build-base-image.sh localhost/asgi-deploy-base:bookworm

image: ## Build the image with docker, podman or buildah, whichever exists (IMAGE=, BASE_IMAGE=)
	@engine=$$(command -v docker || command -v podman || command -v buildah) || \
		{ echo "no docker, podman or buildah found" >&2; exit 1; }; \
	case "$$engine" in */buildah) build="$$engine bud --isolation chroot --layers";; *) build="$$engine build";; esac; \
	set -x; $$build -f deploy/Dockerfile $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) -t $(IMAGE) .

image-test: venv-dev ## Build the image and run it under every server with podman (root)
	$(RUN) -m pytest tests/image $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove the virtual environments and caches
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
