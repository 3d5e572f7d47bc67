# One image for every role of the stack (migrate, worker, beat, flower); docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# procps: `pgrep` for the beat healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends procps \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system notifier \
    && useradd --system --gid notifier --home-dir /app --no-create-home --shell /usr/sbin/nologin notifier

WORKDIR /app
# The exact versions (with hashes) of everything the worker imports, setuptools included; a layer of its
# own, rebuilt only when the lock changes. See README "Dependencies" for refreshing the lock.
COPY requirements/worker.lock /app/requirements/worker.lock
RUN pip install --no-cache-dir --require-hashes -r requirements/worker.lock
COPY . /app
# Our package on top: non-editable, no dependencies (the lock has them all), no build backend fetched.
# The Jinja2 templates are not package data, so they stay in /app/templates and NOTIFIER_TEMPLATES_DIR
# points there.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && rm -rf /app/build /app/*.egg-info \
    && mkdir -p /app/var /var/lib/notifier \
    && chown notifier:notifier /app/var /var/lib/notifier

ENV NOTIFIER_TEMPLATES_DIR=/app/templates

USER notifier

# The worker; docker-compose.yml overrides this per service (init-db, beat, flower).
CMD ["celery", "-A", "worker", "worker", "-E", "-l", "info", "-Q", "notifier"]
