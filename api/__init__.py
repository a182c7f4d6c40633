"""The trainq server: the record, the service, the web app, the worker, and the operator's tools.

Its parts, each a sub-package whose ``__init__`` says what it owns and what it may import:

- ``record``: PostgreSQL, the truth: tables, the status vocabulary (pure data), the single status writer,
  advisory locks, job logs, an attempt's outcome file.
- ``queue``: RQ, the delivery: enqueue, stop, batch reads of RQ's state, the one job class workers run.
- ``service``: what a user can do: submit, actions, queries, limits, users and tokens, the task catalogue, sweeps,
  webhooks, the reconcile pass.
- ``scheduler``: where each queued job runs (placement, reservations, hosts).
- ``web``: the Flask app's routes, pages, OpenAPI, errors, login, rq-dashboard, /metrics.
- ``worker``: the RQ worker (the host's agent), the attempt, its lease and fencing, progress, disk limits.
- ``dev``: ``make run``: embedded Redis and PostgreSQL and the child-process supervisor.
- ``ops``: the operator's commands (``flask --app api ...``).
- ``app``: ``create_app``, which wires them together; ``wsgi``: the app gunicorn serves; ``cron``: the cron entry.

Imports run one way, checked by ``lint-imports`` in ``make test`` (the contracts are in setup.cfg):
cron, wsgi -> app -> ops, web; ops -> dev, service, worker; web -> service -> scheduler -> queue -> record ->
stores, settings; worker -> scheduler. Nothing but ``app`` (the composition root, and the entry points through it)
imports ``web``. This module imports nothing at import time, so importing ``api.record.status`` (pure data) loads
neither Flask nor a database driver.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``flask --app api`` finds ``create_app`` here, imported only when asked for."""
    if name == "create_app":
        from api.app import create_app

        return create_app
    raise AttributeError(f"module 'api' has no attribute {name!r}")
