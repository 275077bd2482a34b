# Two commands do all setup on a fresh machine: `make demo` and `make test`. Both install exactly the set of
# packages in requirements-lock.txt (pip constraints over the `test` extra), so every machine gets what was tested;
# `make lock` re-resolves that set from the newest releases pyproject.toml allows (see README, "Dependencies").
PY ?= python3
VENV := .venv
LOCK := requirements-lock.txt
STAMP := $(VENV)/.installed

OC_VENV := .venv-opencompass
OC_LOCK := requirements-opencompass-lock.txt

.PHONY: demo test lock clean-venv opencompass-venv

$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c $(LOCK) pip setuptools wheel
	$(VENV)/bin/pip install -q -c $(LOCK) -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sailor2-jax demo --output-dir runs/demo

test: $(STAMP) $(OC_VENV)/.installed
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -q --durations=25 tests

# Re-resolve the lock in a scratch venv from the newest releases the ranges in pyproject.toml admit. Commit the new
# lock only after `make test` and `make demo` pass on it.
lock:
	rm -rf .venv-lock
	$(PY) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip setuptools wheel
	.venv-lock/bin/pip install -q '.[test]'
	{ echo "# The tested environment of sailor2_jax[test]: every package pinned (pip constraints). Made by 'make lock'"; \
	  echo "# on $$(date -u +%Y-%m-%d) with $$($(PY) --version); refresh on purpose, then run make test and make demo."; \
	  .venv-lock/bin/pip freeze --all --exclude sailor2_jax --exclude sailor2-jax; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .venv-lock
	rm -f $(STAMP)

# OpenCompass' own code, the reference of tests/eval/test_eval_opencompass.py: a separate venv (its pins conflict with
# the project's lock), installed exactly from its own lock without resolving opencompass' declared dependencies.
$(OC_VENV)/.installed: $(OC_LOCK)
	rm -rf $(OC_VENV)
	$(PY) -m venv $(OC_VENV)
	$(OC_VENV)/bin/pip install -q --no-deps -r $(OC_LOCK)
	touch $@

opencompass-venv: $(OC_VENV)/.installed

clean-venv:
	rm -rf $(VENV) $(OC_VENV)
