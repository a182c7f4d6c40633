"""RQ glue: enqueue under the row's id, stop running work, and read many RQ states in one round trip.

Everything here talks to Redis only; callers decide what a state means for the row.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import time
import zlib
from base64 import b64decode
from collections.abc import Iterable
from dataclasses import dataclass

from flask import current_app
from redis import Redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.worker import Worker

from api.extensions import redis_connection

JOB_FUNCTION = "api.worker.run_training_job"
_WAITING = {RQStatus.QUEUED, RQStatus.DEFERRED, RQStatus.SCHEDULED, RQStatus.CREATED}


def get_queue(connection: Redis | None = None) -> Queue:
    return Queue(current_app.config["QUEUE_NAME"], connection=connection or redis_connection.get())


def enqueue(job_id: str, attempt: int, description: str = "") -> Job:
    """Enqueue the training of row ``job_id`` under the same id; ``attempt`` guards every worker write."""
    cfg = current_app.config
    return get_queue().enqueue(
        JOB_FUNCTION,
        job_id,
        attempt,
        job_id=job_id,
        job_timeout=cfg["JOB_TIMEOUT"],
        result_ttl=cfg["RESULT_TTL"],
        failure_ttl=cfg["RESULT_TTL"],
        description=description or f"training job {job_id} (attempt {attempt})",
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def _kill_group_on_this_host(pid: int | None, hostname: str | None) -> bool:
    """Same-host shortcut: SIGKILL the horse's process group (the horse leads its own group)."""
    if not pid or hostname != socket.gethostname() or not pid_alive(pid):
        return False
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except OSError:
        return False
    return True


def stop(job_id: str, *, pid: int | None = None, hostname: str | None = None) -> bool:
    """Stop RQ's job ``job_id``: cancel it if it waits, send RQ's stop-job command if it runs.

    Returns True when RQ acted. For a running job it waits (``CANCEL_WAIT``) until the worker reports
    the horse gone; if the worker never answers and the horse runs on this host, its group is killed.
    """
    conn = redis_connection.get()
    try:
        job = Job.fetch(job_id, connection=conn)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status in _WAITING:
        job.cancel()
        return True
    if status != RQStatus.STARTED:
        return False
    try:
        send_stop_job_command(conn, job_id)
    except (InvalidJobOperation, NoSuchJobError):
        return False
    deadline = time.monotonic() + current_app.config["CANCEL_WAIT"]
    while time.monotonic() < deadline:
        if job.get_status(refresh=True) != RQStatus.STARTED:
            return True
        time.sleep(0.005)
    return _kill_group_on_this_host(pid, hostname)


@dataclass(frozen=True)
class RQState:
    status: str | None  # None: RQ has no such job
    worker_name: str | None = None
    worker_alive: bool | None = None  # for started jobs: is the worker still registered and alive
    error: str | None = None  # last line of RQ's failure text for failed jobs


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


def _worker_alive(pid: bytes | None, hostname: bytes | None) -> bool:
    """A worker is alive while its RQ key exists; on this host its pid must also exist."""
    if pid is None:
        return False
    if _text(hostname) == socket.gethostname():
        return pid_alive(int(pid))
    return True


def _error_summary(entries: list) -> str | None:
    if not entries:
        return None
    payload = entries[0][1]
    raw = payload.get(b"exc_string")
    if not raw:
        return None
    text = zlib.decompress(b64decode(raw)).decode(errors="replace").strip()
    return text.splitlines()[-1] if text else None


def fetch_states(job_ids: Iterable[str]) -> dict[str, RQState]:
    """RQ status of many jobs in two pipelined round trips, whatever their number.

    First the job hashes' ``status``/``worker_name`` fields; then, only for the workers and failures
    those name, the workers' ``pid``/``hostname`` and the latest failure text.
    """
    ids = list(job_ids)
    if not ids:
        return {}
    conn = redis_connection.get()
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(Job.key_for(job_id), "status", "worker_name")
    fields = dict(zip(ids, pipe.execute(), strict=True))

    workers = sorted({_text(w) for s, w in fields.values() if _text(s) == RQStatus.STARTED and w})
    failed = [job_id for job_id, (s, _) in fields.items() if _text(s) == RQStatus.FAILED]
    pipe = conn.pipeline(transaction=False)
    for name in workers:
        pipe.hmget(Worker.redis_worker_namespace_prefix + name, "pid", "hostname")
    for job_id in failed:
        pipe.xrevrange(f"rq:results:{job_id}", count=1)
    replies = pipe.execute() if workers or failed else []
    alive = {name: _worker_alive(*reply) for name, reply in zip(workers, replies[: len(workers)], strict=True)}
    errors = dict(zip(failed, map(_error_summary, replies[len(workers) :]), strict=True))

    states = {}
    for job_id, (status, worker) in fields.items():
        name = _text(worker)
        states[job_id] = RQState(
            status=_text(status),
            worker_name=name,
            worker_alive=alive.get(name) if name in alive else None,
            error=errors.get(job_id),
        )
    return states
