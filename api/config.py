"""Every setting in one place: environment variable, default, and why.

``load()`` reads the environment once; ``create_app(config)`` lays a mapping over it (tests do).
"""

from __future__ import annotations

import os
from typing import Any

# name: (default, parser, why)
SETTINGS: dict[str, tuple[Any, type, str]] = {
    "DATABASE_URL": ("postgresql://postgres@127.0.0.1:5432/trainq", str, "the record of every job"),
    "REDIS_URL": ("redis://127.0.0.1:6379/0", str, "RQ's queues, workers and commands"),
    "QUEUE_NAME": ("training", str, "the RQ queue the API fills and workers drain"),
    "JOB_TIMEOUT": (7 * 24 * 3600, int, "RQ kills a horse after this many seconds; training is long"),
    "RESULT_TTL": (7 * 24 * 3600, int, "keep RQ results long enough for reconciliation to read them"),
    "CHECKPOINT_DIR": ("var/checkpoints", str, "per-job checkpoint folders (shared storage for many hosts)"),
    "PROGRESS_INTERVAL": (1.0, float, "a running job writes progress to its row at most this often (s)"),
    "CANCEL_WAIT": (3.0, float, "DELETE waits up to this long for RQ to confirm the horse is gone (s)"),
    "RECONCILE_INTERVAL": (2.0, float, "the reconciler loop's period (s)"),
    "ENQUEUE_GRACE": (5.0, float, "a queued row with no RQ id younger than this is left to its submitter (s)"),
    "REDIS_TIMEOUT": (2.0, float, "socket timeouts, so a dead Redis answers 503 instead of hanging"),
    "LOG_LEVEL": ("INFO", str, "logging level of the API, worker and reconciler"),
}


def _parse(kind: type, raw: str) -> Any:
    return kind(raw)


def load(environ: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    return {name: _parse(kind, env[name]) if name in env else default for name, (default, kind, _) in SETTINGS.items()}


def describe() -> list[tuple[str, Any, str]]:
    """(name, default, why) rows: the README's configuration table is made from this."""
    return [(name, default, why) for name, (default, _, why) in SETTINGS.items()]
