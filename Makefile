# The two commands a newcomer needs: `make demo` and `make test` (README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench-webhook bench-capture e2e-cluster render-base clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("oomdump needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest

bench-webhook: $(STAMP)
	$(PY) bench/webhook_load/run.py

bench-capture: $(STAMP)
	$(PY) bench/capture/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# A real one-node cluster with oomdump and the example leak, until Ctrl-C (root).
e2e-cluster: $(STAMP)
	$(PY) -m testinfra.try_cluster

# deploy/base and the chart's generated checks (values.schema.json, _registry.tpl) from
# deploy/helm/oomdump and the webhook's registry; builds helm on first use.
render-base: $(STAMP)
	$(PY) -m testinfra.helm_base
