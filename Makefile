# Two commands for a fresh clone: `make worker` and `make test`. Each sets itself up (.venv, install).
PYTHON ?= python3
VENV := .venv
DB ?= sqlite

.PHONY: install system-deps worker test demo lint

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[fastapi,test]'
	touch $@

install: $(VENV)/.installed

## Run the worker (with beat) on embedded defaults: SQLite file, embedded Redis if none answers, outbox folder.
worker: install
	$(VENV)/bin/notifier worker

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

demo: install
	$(VENV)/bin/notifier demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
