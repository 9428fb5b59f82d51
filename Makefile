# The commands people type. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help install docker tools bench-tools images test lint run bench bench-quick clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Create .venv with the project installed editable (and dev tools)

docker: ## Make sure a Docker engine runs (installs Debian's docker.io as root if needed)
	bash deploy/ensure-docker.sh

tools: ## Install the Debian tools tests use (dig, curl, openssl, ip, nsenter, iptables, docker-compose, gcc, ...)
	bash deploy/ensure-packages.sh dig=dnsutils curl=curl openssl=openssl ip=iproute2 \
		nsenter=util-linux iptables=iptables systemd-analyze=systemd promtool=prometheus \
		gcc=gcc python3-config=python3-dev \
		docker-compose=docker-compose

bench-tools: ## Install what benchmarks use (wrk, nginx, and gcc for the compiled proxy)
	bash deploy/ensure-packages.sh wrk=wrk nginx=nginx-light gcc=gcc python3-config=python3-dev

images: docker ## Build the local images (test backend, demo, Plane itself), only when their files changed
	bash deploy/build-image.sh testbackend deploy/images/testbackend
	bash deploy/build-image.sh demo deploy/images/demo
	bash deploy/images/plane/build-local.sh

lint: install ## ruff and mypy --strict over the three packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict shared controller drone

test: install docker tools images lint ## Install everything tests need, then run them all
	$(BIN)/pytest $(PYTEST_ARGS)

run: install docker images ## Start a local cluster (NATS, controller, drone, demo backend)
	$(PY) deploy/local_cluster.py

bench: install docker images bench-tools ## Benchmarks against baselines in the same run (a few minutes)
	$(PY) -m tests.bench

bench-quick: install docker images bench-tools ## A shorter benchmark run (under 2 minutes)
	$(PY) -m tests.bench --quick

clean: ## Remove the venv and local state
	rm -rf $(VENV) .state
