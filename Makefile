# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DATA    ?= $(CURDIR)/data
UI_PORT ?= 3000
EXPLORER_PORT ?= 8787
# The demo and the UI share one chain and one Dagster instance under data/ (tests use temporary ones).
RUNTIME := GONKA_DATA_DIR=$(DATA) DAGSTER_HOME=$(DATA)/dagster_home GONKA_UI_PORT=$(UI_PORT)

.PHONY: install chromium postgresql demo lint test test-fast ui explorer bench clean

# The install also compiles gonka_pipelines/protocol/_sha256.c (batch SHA-256 in C) and _canonical.c (canonical JSON
# leaves of Arrow rows) with gcc against OpenSSL's headers, gonka_pipelines/protocol/_comparison.c (validators'
# verdicts on outputs) and gonka_pipelines/compute/_streams.c (the sprint's nonce streams on CPU).
$(STAMP): pyproject.toml gonka_pipelines/protocol/_sha256.c gonka_pipelines/protocol/_canonical.c \
          gonka_pipelines/protocol/_ryu_tables.h gonka_pipelines/protocol/_comparison.c gonka_pipelines/compute/_streams.c
	(command -v gcc >/dev/null && test -f /usr/include/openssl/sha.h) || (apt-get update -qq && apt-get install -y -qq gcc libssl-dev)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch lies on local disk; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

chromium:  ## Debian's chromium for the browser test (Playwright's own browser download does not work here)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

postgresql:  ## Debian's PostgreSQL server binaries, for the test that runs Dagster on PostgreSQL (no service is started)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql)

demo: install  ## create the venv, run 3 epochs into data/chain.duckdb through Dagster, print a summary
	$(RUNTIME) $(VENV)/bin/gonka demo --epochs 3

lint: install  ## ruff, the layer contracts (import-linter) and the type checker (mypy)
	$(VENV)/bin/ruff check gonka_pipelines tests bench tools
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: install chromium postgresql lint  ## lint, then the whole suite, slow end-to-end and browser tests included (what CI runs)
	$(PY) -m pytest -q

test-fast: install  ## skip the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow"

ui: install  ## the Dagster UI on http://127.0.0.1:$(UI_PORT) (default 3000) over the same instance and chain
	$(RUNTIME) $(VENV)/bin/gonka init
	$(RUNTIME) VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/dg dev -h 127.0.0.1 -p $(UI_PORT)

explorer: install  ## the read-only block explorer on http://127.0.0.1:$(EXPLORER_PORT) (default 8787) over the same chain
	$(RUNTIME) $(VENV)/bin/gonka explorer --port $(EXPLORER_PORT)

bench: install  ## benchmarks, with ratios against baselines measured in the same run
	$(PY) bench/run_all.py

clean:  ## remove the chain, keys, inbox and Dagster home under data/
	rm -rf data/chain.duckdb data/chain.duckdb.wal data/keys data/inbox data/dagster_home data/artifacts data/admitted-signatures.tsv data/verified-blocks.json
