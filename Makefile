# Two entry points for a fresh clone: `make repro` and `make test`.
# Both create .venv idempotently from the pinned set in requirements/lock.txt.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: repro test venv clean-venv

$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c requirements/lock.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Stage commands call `python`, so the venv must come first on PATH.
repro: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

test: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
