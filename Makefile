# make demo | make test | make ui | make check | make seed | make lint | make clean
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export BATCH_INFERENCE_ROOT ?= $(CURDIR)/.data

BENCH_ROWS ?= 5000000
BENCH_RUNS ?= 3

.PHONY: venv instance demo seed ui check test lint typecheck unit bench bench-peers clean system-deps

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# The instance's SQLite storage, created and migrated once, before the demo's runs, the UI's
# webserver and daemon, or a test can race to create it.
INSTANCE := $(DAGSTER_HOME)/history/runs.db
$(INSTANCE): $(STAMP)
	$(BIN)/dagster instance migrate >/dev/null

instance: $(INSTANCE)

demo: venv instance
	$(BIN)/python -m dagster_defs.demo.run --root $(BATCH_INFERENCE_ROOT)

seed: venv instance
	$(BIN)/python -m dagster_defs.demo.seed --root $(BATCH_INFERENCE_ROOT)

ui: venv instance
	test -f $(BATCH_INFERENCE_ROOT)/warehouse.duckdb || $(MAKE) seed
	$(BIN)/dg dev -h 127.0.0.1 -p 3000

# Each pipeline's defs.yaml against the component's schema (one folder per call: dg 1.13.27
# checks only one file per component type when given the whole project), then the code location.
check: venv
	for d in dagster_defs/defs/pipelines/*/; do $(BIN)/dg check yaml $$d || exit 1; done
	$(BIN)/dg check defs

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# Besides Python packages, the suite starts real servers and a real browser from Debian's
# packages: PostgreSQL's server binaries, redis-server and chromium (no running service needed).
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	test -x /usr/bin/redis-server || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "make test needs Debian packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

test: lint typecheck system-deps
	$(BIN)/pytest -n 2 --dist worksteal

unit: venv
	$(BIN)/pytest tests/unit

bench: venv
	$(BIN)/python -m bench.run --rows $(BENCH_ROWS) --runs $(BENCH_RUNS) --compiled

# Ray Data and Spark (local[2], needs a Java runtime) as peers in `make bench`'s table.
bench-peers: venv
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,bench-peers]"

clean:
	rm -rf $(VENV) .data .mypy_cache .pytest_cache .ruff_cache
	find .dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
