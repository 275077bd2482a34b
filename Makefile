# Two commands do all setup on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean-venv

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sailor2-jax demo --out runs/demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile -q tests

clean-venv:
	rm -rf $(VENV)
