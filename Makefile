# sensorlog developer entry points. `make` alone lists them.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eEuo pipefail -c
.DEFAULT_GOAL := help

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
TOOLS := $(ROOT)/.tools
UV := $(TOOLS)/bin/uv
PY := $(ROOT)/.venv/bin/python
export PATH := $(TOOLS)/bin:$(PATH)

# Pinned tool versions live in hack/tools/versions.env (one place).

##@ General
.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Setup
.PHONY: tools
tools: ## Install every pinned tool into .tools/ and sync .venv (idempotent).
	bash hack/tools/all.sh

.PHONY: sync
sync: ## Only sync the Python environment from uv.lock.
	bash hack/tools/all.sh python

##@ Run
.PHONY: dev
dev: tools ## Run the whole pipeline locally (Kafka, TimescaleDB, writer, query). ARGS=--postgres for plain PostgreSQL.
	$(PY) -m sensorlog_stack.dev $(ARGS)

.PHONY: migrate
migrate: ## Apply schema migrations to SENSORLOG_MIGRATE_DATABASE_DSN.
	$(PY) -m sensorlog_core.migrate

##@ Development
.PHONY: proto
proto: ## Regenerate the committed gRPC stubs from protos/.
	$(PY) protos/generate.py

.PHONY: lint
lint: ## ruff lint and format check.
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

.PHONY: typecheck
typecheck: ## mypy (strict) on every member.
	$(UV) run --frozen mypy core/src protos/generate.py images/writer/src images/query/src operator/src hack/stack/src

.PHONY: unit
unit: ## Fast tests only (no real services).
	$(PY) -m pytest -m "not integration and not e2e" $(PYTEST_ARGS)

.PHONY: test
test: tools lint typecheck test-node ## Everything CI runs: tools, lint, types, unit + integration tests on the real local stack.
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

.PHONY: test-node
test-node: ## The TimescaleDB front's own wire-level tests (node --test).
	cd hack/pglite && node --test test/

##@ Benchmarks
BENCH_ARGS ?= --small

.PHONY: bench-writer
bench-writer: tools ## Writer throughput vs raw COPY, and RSS under a backlog -> bench/out/writer.md.
	$(PY) bench/writer_bench.py $(BENCH_ARGS)

.PHONY: bench-query
bench-query: tools ## Query service vs direct SQL -> bench/out/query.md.
	$(PY) bench/query_bench.py $(BENCH_ARGS)

.PHONY: bench-pipeline
bench-pipeline: tools ## End-to-end produce-to-visible latency at 1k/5k/20k readings/s -> bench/out/pipeline.json.
	$(PY) bench/pipeline_bench.py $(BENCH_ARGS)

.PHONY: bench-cagg
bench-cagg: tools ## AggregateReadings from a continuous aggregate vs raw rows on TimescaleDB -> bench/out/cagg.md.
	$(PY) bench/cagg_bench.py

.PHONY: bench
bench: bench-writer bench-query bench-pipeline bench-cagg ## All benchmarks + bench/REPORT.md with plots (small mode; BENCH_ARGS=--full).
	$(PY) bench/report.py

##@ Kubernetes
.PHONY: helm-verify
helm-verify: tools ## Lint, render and validate the chart (helm 3 and 4, k8s 1.29-1.37 schemas, real API server).
	$(PY) charts/hack/values_schema.py --check
	$(PY) -m pytest -m integration tests/integration/test_chart.py -q

.PHONY: images
images: ## Build the query, writer and operator images (TAG=..., ENGINE=podman|docker, KIND_CLUSTER=sensorlog to load).
	hack/images.sh

.PHONY: images-check
images-check: tools ## Build the images and prove each runs non-root, read-only, healthy on 127.0.0.1 (needs root + podman).
	hack/images_check.sh

.PHONY: kind-up
kind-up: ## Create (or reuse) the kind cluster "sensorlog".
	kind get clusters | grep -qx sensorlog || kind create cluster --config kind-config.yaml --wait 180s

.PHONY: kind-down
kind-down: ## Delete the kind cluster "sensorlog".
	kind delete cluster --name sensorlog

.PHONY: deploy
deploy: kind-up ## Build images, load them into kind and helm install the chart.
	TAG=dev KIND_CLUSTER=sensorlog hack/images.sh
	$(TOOLS)/bin/helm upgrade --install sensorlog charts/sensorlog --kube-context kind-sensorlog \
	  -n sensorlog --create-namespace -f charts/sensorlog/examples/minimal.yaml \
	  --set image.tag=dev --set image.pullPolicy=Never --wait --timeout 15m

.PHONY: skaffold-dev
skaffold-dev: kind-up ## skaffold dev loop on kind (rebuild + redeploy on change).
	skaffold dev -p dev

.PHONY: e2e
e2e: tools ## kind end-to-end tests (needs docker/podman and kind; skipped otherwise).
	$(PY) -m pytest -m e2e tests/e2e -v
