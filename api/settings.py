"""Every setting in one place: environment variable, default, and why.

``load()`` reads the environment once; ``create_app(config)`` lays a mapping over it (tests do).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# name: (default, parser, why)
SETTINGS: dict[str, tuple[Any, Callable[[str], Any], str]] = {
    "DATABASE_URL": ("postgresql://postgres@127.0.0.1:5432/trainq", str, "the record of every job"),
    "REDIS_URL": ("redis://127.0.0.1:6379/0", str, "RQ's queues, workers and commands"),
    "QUEUE_NAME": ("training", str, "prefix of the RQ queues, one per task (<prefix>.<task>)"),
    "JOB_TIMEOUT": (7 * 24 * 3600, int, "RQ kills a horse after this many seconds; training is long"),
    "RESULT_TTL": (7 * 24 * 3600, int, "keep RQ results long enough for reconciliation to read them"),
    "CHECKPOINT_DIR": ("var/checkpoints", str, "per-job checkpoint folders (shared storage for many hosts)"),
    "ARTIFACT_DIR": ("var/artifacts", str, "per-job artifact folders (shared storage for many hosts)"),
    "KEEP_CHECKPOINTS": (3, int, "a job keeps its newest this many checkpoints; older ones are deleted"),
    "DEVICE": ("", str, "torch device for tasks (cpu, cuda, cuda:1); empty: CUDA when available"),
    "PROGRESS_INTERVAL": (1.0, float, "a running job writes progress to its row at most this often (s)"),
    "CANCEL_WAIT": (3.0, float, "DELETE waits up to this long for RQ to confirm the horse is gone (s)"),
    "RECONCILE_INTERVAL": (2.0, float, "the reconciler loop's period (s)"),
    "LIVENESS_INTERVAL": (0.25, float, "between passes, the active reconciler looks this often for running "
                                       "attempts whose database session ended (their process died) (s)"),
    "ENQUEUE_GRACE": (5.0, float, "a queued row with no RQ id younger than this is left to its submitter (s)"),
    "HEARTBEAT_INTERVAL": (0.25, float, "a running job (and each worker) beats this often, from a thread (s)"),
    "HEARTBEAT_TIMEOUT": (10.0, float, "a running job silent this long, with no live horse, is lost (s)"),
    "LEASE_RENEW_INTERVAL": (1.0, float, "a running attempt confirms its database session (its liveness and "
                                         "training locks) this often, from a thread (s)"),
    "LEASE_FENCE": (7.0, float, "an attempt that could confirm neither its database session for this long nor its "
                                "Redis heartbeat stops its own training; keep it under the server's drop (10 s) (s)"),
    "TAKEOVER_WAIT": (120.0, float, "a new attempt waits this long for an older attempt of its job to let go of "
                                    "the job's training lock, then fails saying so (s)"),
    "WORKER_HEARTBEAT_TTL": (4.0, float, "a worker whose heartbeat key is this old is gone (s)"),
    "MAX_ATTEMPTS": (1, int, "attempts a job gets; a lost attempt with a checkpoint is retried if any are left"),
    "MAX_QUEUE_AGE": (24 * 3600, int, "a queued job Redis lost is re-enqueued if younger than this, else failed (s)"),
    "DB_RETRY_SECONDS": (300.0, float, "a worker retries a final status write this long while PostgreSQL is down (s)"),
    "RECONCILE_ON_START": (True, lambda v: v.lower() not in ("0", "false", "no", ""), "reconcile once at API start"),
    "LOG_MAX_LINES": (10_000, int, "a job's log keeps this many lines; past it, it says it was truncated"),
    "REDIS_TIMEOUT": (2.0, float, "socket timeouts, so a dead Redis answers 503 instead of hanging"),
    "LOG_LEVEL": ("INFO", str, "logging level of the API, worker and reconciler"),
    "SECRET_KEY": ("", str, "signs the monitor's session cookies; the web service refuses to serve without one"),
    "ALLOWED_HOSTS": ("localhost,127.0.0.1,::1", str,
                      "Host names (any port) the API answers; any other Host header is a 400 (DNS rebinding)"),
    "MAX_CONTENT_LENGTH": (1024 * 1024, int, "largest request body in bytes; a bigger one is a 413"),
    "MAX_QUEUED_JOBS": (100, int, "queued jobs one user may have at a time (a user's own limit overrides it)"),
    "JOB_DISK_LIMIT_MB": (10_240, int, "MB a job's checkpoints and artifacts may use; past it the job fails (0: none)"),
    "SESSION_DAYS": (14, int, "days a monitor login lasts (the token it was made with must stay valid too)"),
}


def load(environ: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    return {name: parse(env[name]) if name in env else default for name, (default, parse, _) in SETTINGS.items()}


def describe() -> list[tuple[str, Any, str]]:
    """(name, default, why) rows: the README's configuration table is made from this."""
    return [(name, default, why) for name, (default, _, why) in SETTINGS.items()]
