# Two commands for a fresh clone: `make worker` and `make test`. Each sets itself up (.venv, install).
PYTHON ?= python3
VENV := .venv
DB ?= sqlite

.PHONY: install worker test demo lint

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed

## Run the worker (with beat) on embedded defaults: SQLite file, embedded Redis if none answers, outbox folder.
worker: install
	$(VENV)/bin/notifier worker

## Run the test suite; DB=postgresql runs it against PostgreSQL at 127.0.0.1:5432.
test: install
	NOTIFIER_TEST_DB=$(DB) $(VENV)/bin/pytest $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/notifier demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
