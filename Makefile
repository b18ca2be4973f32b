# Two set-up commands: `make up` runs the gateway on embedded defaults, `make test` runs the suite.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# One hashed lock per interpreter (3.11 takes the CPU torch build, 3.12 the registry's): docs/operations.md
PYVER  := $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")' 2>/dev/null)
LOCK   := requirements/py$(PYVER).lock
LOCK_FLAGS := --extra test --extra dev --generate-hashes --python-platform x86_64-manylinux_2_31 --quiet

.PHONY: up test venv lock lint proto clean bench sysdeps docs deploy-check

$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11 or 3.12)"; exit 1; }
	@test -f $(LOCK) || { echo "no lock file for Python $(PYVER) ($(LOCK)); supported: 3.11, 3.12"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# exactly the locked versions, each checked against its hash; nothing else is resolved
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check
	# the injection detector's static embedding table, distilled once from the bundled MiniLM (about a minute)
	HF_HUB_OFFLINE=1 $(BIN)/python -m intelligence.detectors.static_embed
	touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	$(BIN)/llmproxy up $(ARGS)

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check extproc intelligence ui tests
	$(BIN)/python -m ruff format --check extproc intelligence ui tests
	$(BIN)/lint-imports
	$(BIN)/python -m mypy

# System tools the tests drive: objdump (binary portability guard), qemu-user (foreign CPU models),
# Debian's Chromium (the dashboard in a real browser; never a downloaded browser build).
SYSTOOLS := objdump:binutils qemu-x86_64:qemu-user chromium:chromium
sysdeps:
	@missing=""; for t in $(SYSTOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (install them; the tests that need them fail without)" >&2; fi; \
	fi

# Generated files: the configuration reference and the Envoy configs of compose and Kubernetes.
docs: $(STAMP)
	$(BIN)/python -m extproc.cli.docgen
	$(BIN)/python deploy/render_envoy.py

deploy-check: $(STAMP)
	$(BIN)/python deploy/render_envoy.py --check
	$(BIN)/python -m extproc.cli.docgen --check

# Refresh both lock files from pyproject.toml (needs the package registry; uv comes from the dev extra).
lock:
	@command -v uv >/dev/null || $(PYTHON) -m pip install -q uv
	uv pip compile pyproject.toml $(LOCK_FLAGS) --python-version 3.11 --find-links /opt/wheels \
	  --override requirements/torch-cpu.txt -o requirements/py311.lock
	uv pip compile pyproject.toml $(LOCK_FLAGS) --python-version 3.12 -o requirements/py312.lock

proto: $(STAMP)
	$(BIN)/python -m intelligence.control.build

bench: $(STAMP)
	$(BIN)/llmproxy bench $(ARGS)

clean:
	rm -rf $(VENV) .llmproxy .pytest_cache .coverage .coverage.*
