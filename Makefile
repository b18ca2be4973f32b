# Two set-up commands: `make up` runs the gateway on embedded defaults, `make test` runs the suite.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test venv proto clean bench lint

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python >= 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	# the injection detector's static embedding table, distilled once from the bundled MiniLM (about a minute)
	HF_HUB_OFFLINE=1 $(BIN)/python -m extproc.security.static_embed
	touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	$(BIN)/llmproxy up $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/llmproxy bench $(ARGS)

clean:
	rm -rf $(VENV) .llmproxy .pytest_cache .coverage .coverage.*
