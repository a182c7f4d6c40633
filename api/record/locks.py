"""Every PostgreSQL advisory lock the service takes, in one key space: the two-integer form ``(namespace, key)``,
so a job's liveness lock can never collide with a recovery action's lock or the reconciler's.

- ``RECONCILER``: held by the active ``flask reconciler`` (one active at a time, the others stand by).
- ``JOB_ACTION``: one restart of a job (force-start, resume, a requeue in rq-dashboard) at a time.
- ``USER_SUBMIT``: one submit at a time per user while their queued jobs are counted (transaction-scoped).
- ``ATTEMPT``: held by a running attempt's own database session for as long as it runs. PostgreSQL frees it
  the moment that session ends (the process died, with its worker or alone, on any host), so its absence
  says the attempt is gone without waiting out a heartbeat's TTL.
- ``TRAINING``: one per job (``job_key``), held by the same session beside its ``ATTEMPT`` lock. A new
  attempt takes it before its row says running, waiting while an older attempt's session still holds it:
  two attempts of one job never train at once, even if the reconciler gave the job away too early.
- ``SCHEDULER``: one scheduling pass at a time (transaction-scoped), wherever it runs: the API after a submit,
  an agent after a job, the reconciler's periodic pass.
- ``HOST``: held by a host's agent in its own database session while it lives (key: the host's id), as
  ``ATTEMPT`` is for an attempt: its absence says the agent is gone.
- ``GPU``: held by the agent that offers the GPU (key: ``gpu_key`` of its UUID): a second agent claiming the same
  device is refused.
- ``SWEEP``: one change of a sweep at a time (key: ``job_key`` of the sweep's id), held by a session of its own:
  the driver's step (tell Optuna how trials ended, ask it for the next, write the trial's job) and a stop by its
  owner never interleave, so a stopped sweep starts no trial. The driver itself runs only in the active
  reconciler (``RECONCILER``): one active driver at a time.
- ``OPTUNA_SETUP``: one process at a time opens Optuna's storage the first time (Optuna creates its tables in the
  ``optuna`` schema then; two at once would race on them).
"""

from __future__ import annotations

import hashlib
import uuid
from enum import IntEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection


class Namespace(IntEnum):
    RECONCILER = 0x7471_0001
    JOB_ACTION = 0x7471_0002
    ATTEMPT = 0x7471_0003
    USER_SUBMIT = 0x7471_0004
    TRAINING = 0x7471_0005
    SCHEDULER = 0x7471_0006
    HOST = 0x7471_0007
    GPU = 0x7471_0008
    SWEEP = 0x7471_0009
    OPTUNA_SETUP = 0x7471_000A


RECONCILER_KEY = 1  # the one key in its namespace
SCHEDULER_KEY = 1  # the one key in its namespace
OPTUNA_SETUP_KEY = 1  # the one key in its namespace


def gpu_key(uuid_text: str) -> int:
    """A GPU's key: 31 bits of a hash of its UUID (NVML's ``GPU-…``, or a fake device's name)."""
    return int.from_bytes(hashlib.blake2b(uuid_text.encode(), digest_size=4).digest(), "big") & 0x7FFF_FFFF


def job_key(job_id: uuid.UUID | str) -> int:
    """A job's key within a namespace: 31 bits of its id (non-negative, so ``pg_locks.objid`` reads the same
    number). Two jobs may share one (about one pair in two billion): in ``TRAINING`` a shared key only makes one
    job's new attempt wait while the other job's attempt runs, never lets two attempts of one job run."""
    return int.from_bytes(uuid.UUID(str(job_id)).bytes[:4], "big") & 0x7FFF_FFFF


def try_lock(conn: Connection, namespace: Namespace, key: int) -> bool:
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:ns, :key)"), {"ns": int(namespace), "key": key})
                .scalar())


def lock(conn: Connection, namespace: Namespace, key: int) -> None:
    conn.execute(text("SELECT pg_advisory_lock(:ns, :key)"), {"ns": int(namespace), "key": key})


def lock_for_transaction(conn: Connection | Any, namespace: Namespace, key: int) -> None:
    """Held until the caller's transaction ends (``conn``: a connection or a session)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": int(namespace), "key": key})


def try_lock_for_transaction(conn: Connection | Any, namespace: Namespace, key: int) -> bool:
    """Take the lock until the transaction ends if it is free; False, at once, if another session holds it."""
    return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:ns, :key)"),
                             {"ns": int(namespace), "key": key}).scalar())


def held_sql(namespace: Namespace, key: int) -> str:
    """SQL: whether some session of this database holds ``(namespace, key)``."""
    return f"SELECT EXISTS ({held_keys_sql(namespace)} AND objid = {int(key)}::oid)"


def unlock(conn: Connection, namespace: Namespace, key: int) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(:ns, :key)"), {"ns": int(namespace), "key": key})


def held_keys_sql(namespace: Namespace) -> str:
    """SQL for the keys held in ``namespace`` in this database, as pg_locks shows a two-integer advisory lock
    (classid = namespace, objid = key, objsubid = 2)."""
    return ("SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted"
            f" AND classid = {int(namespace)}::oid"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
