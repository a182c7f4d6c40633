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
from typing import Any

from flask import current_app
from redis import Redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.worker import Worker

from api.extensions import redis_connection

JOB_FUNCTION = "api.worker.run_training_job"
_WAITING = {RQStatus.QUEUED, RQStatus.DEFERRED, RQStatus.SCHEDULED, RQStatus.CREATED}


# Our keys beside RQ's. The attempt key says which attempt RQ's job hash describes (the RQ id is the row's
# id for every attempt); heartbeat keys exist while their owner beats (their TTL is the timeout).
ATTEMPT_PREFIX = "trainq:attempt:"
JOB_HEARTBEAT_PREFIX = "trainq:heartbeat:job:"


def attempt_key(job_id: str) -> str:
    return ATTEMPT_PREFIX + job_id


def job_heartbeat_key(job_id: str) -> str:
    return JOB_HEARTBEAT_PREFIX + job_id


def worker_heartbeat_key(worker_name: str) -> str:
    return f"trainq:heartbeat:worker:{worker_name}"


def control_key(job_id: str) -> str:
    return f"trainq:control:{job_id}"


def get_queue(connection: Redis | None = None) -> Queue:
    return Queue(current_app.config["QUEUE_NAME"], connection=connection or redis_connection.get())


def enqueue(job_id: str, attempt: int, description: str = "") -> Job:
    """Enqueue the training of row ``job_id`` under the same id; ``attempt`` guards every worker write."""
    cfg = current_app.config
    queue = get_queue()
    started = StartedJobRegistry(queue=queue)
    prefix = f"{job_id}:".encode()
    earlier = [m for m in queue.connection.zrange(started.key, 0, -1) if m.startswith(prefix)]
    with queue.connection.pipeline() as pipe:  # job and its attempt number land together, or not at all
        pipe.multi()
        # Forget earlier attempts under this id: RQ's registry cleanup would otherwise mark the job id
        # failed when a dead attempt's started entry expires, while a later attempt runs.
        if earlier:
            pipe.zrem(started.key, *earlier)
        for registry in (FailedJobRegistry, CanceledJobRegistry, FinishedJobRegistry):
            pipe.zrem(registry(queue=queue).key, job_id)
        job = queue.enqueue_call(
            JOB_FUNCTION,
            args=(job_id, attempt),
            job_id=job_id,
            timeout=cfg["JOB_TIMEOUT"],
            result_ttl=cfg["RESULT_TTL"],
            failure_ttl=cfg["RESULT_TTL"],
            description=description or f"training job {job_id} (attempt {attempt})",
            pipeline=pipe,
        )
        pipe.set(attempt_key(job_id), attempt, ex=cfg["RESULT_TTL"])
        pipe.delete(control_key(job_id))
        pipe.execute()
    return job


def request_pause(job_id: str) -> None:
    """Ask the running attempt to checkpoint and stop; its heartbeat thread reads this within a beat."""
    redis_connection.get().set(control_key(job_id), "pause", ex=current_app.config["JOB_TIMEOUT"])


def running_count() -> int:
    return StartedJobRegistry(queue=get_queue()).count


def return_value(job_id: str) -> Any:
    """What the job function returned (the final metrics), if RQ still has it."""
    try:
        return Job.fetch(job_id, connection=redis_connection.get()).return_value()
    except NoSuchJobError:
        return None


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
    attempt: int | None = None  # the attempt RQ's job describes (None: not recorded)
    worker_name: str | None = None
    worker_alive: bool | None = None  # for started jobs: does the worker still beat (and, here, exist)
    job_beating: bool = False  # the attempt's heartbeat key exists
    error: str | None = None  # last line of RQ's failure text for failed jobs


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


def _worker_alive(beat: bytes | None, pid: bytes | None, hostname: bytes | None) -> bool:
    """A worker is alive while its heartbeat key exists; on this host its pid must also exist."""
    if beat is None:
        return False
    if pid is not None and _text(hostname) == socket.gethostname():
        return pid_alive(int(pid))
    return True


def _error_summary(entries: list) -> str | None:
    if not entries:
        return None
    raw = entries[0][1].get(b"exc_string")
    if not raw:
        return None
    text = zlib.decompress(b64decode(raw)).decode(errors="replace").strip()
    return text.splitlines()[-1] if text else None


# One server-side call reads, per job, RQ's status and worker_name, our attempt key and whether the job's
# heartbeat key is there, and answers one short line per job ("" for a missing job). A pipeline of three
# commands per job spends most of its time packing and parsing them in Python.
_READ_JOBS = """
local job_prefix, attempt_prefix, beat_prefix = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local fields = redis.call('HMGET', job_prefix .. id, 'status', 'worker_name')
  if fields[1] then
    local beat = redis.call('GET', beat_prefix .. id)
    out[#out + 1] = fields[1] .. ' ' .. (redis.call('GET', attempt_prefix .. id) or '-') .. ' ' ..
                    (beat and string.match(beat, '^%S+') or '-') .. ' ' .. (fields[2] or '')
  else
    out[#out + 1] = ''
  end
end
return out
"""
_READ_CHUNK = 5000  # ids per call: bounds how long one call holds Redis


def _read_jobs(conn: Redis, ids: list[str]) -> list[bytes]:
    script = conn.register_script(_READ_JOBS)
    prefixes = [Job.redis_job_namespace_prefix, ATTEMPT_PREFIX, JOB_HEARTBEAT_PREFIX]
    lines: list[bytes] = []
    for start in range(0, len(ids), _READ_CHUNK):
        lines += script(args=prefixes + ids[start : start + _READ_CHUNK])
    return lines


def fetch_states(job_ids: Iterable[str]) -> dict[str, RQState]:
    """RQ's view of many jobs in two round trips (per 5000 jobs), whatever their number.

    First, in one Lua call, each job hash's ``status``/``worker_name`` with our attempt and heartbeat keys;
    then, pipelined and only for the workers and failures those name, the workers' heartbeat keys and
    ``pid``/``hostname`` and the latest failure text.
    """
    ids = list(job_ids)
    if not ids:
        return {}
    conn = redis_connection.get()
    # status, attempt ("-": none), the heartbeat's attempt ("-": none), worker name ("" if none)
    fields = {job_id: line.decode().split(" ", 3) if line else None
              for job_id, line in zip(ids, _read_jobs(conn, ids), strict=True)}

    workers = sorted({f[3] for f in fields.values() if f and f[0] == RQStatus.STARTED and f[3]})
    failed = [job_id for job_id, f in fields.items() if f and f[0] == RQStatus.FAILED]
    pipe = conn.pipeline(transaction=False)
    for name in workers:
        pipe.get(worker_heartbeat_key(name))
        pipe.hmget(Worker.redis_worker_namespace_prefix + name, "pid", "hostname")
    for job_id in failed:
        pipe.xrevrange(f"rq:results:{job_id}", count=1)
    more = pipe.execute() if workers or failed else []
    alive = {name: _worker_alive(more[2 * i], *more[2 * i + 1]) for i, name in enumerate(workers)}
    errors = dict(zip(failed, map(_error_summary, more[2 * len(workers) :]), strict=True))

    states = {}
    for job_id, f in fields.items():
        if f is None:
            states[job_id] = RQState(None)
            continue
        status, attempt, beat, name = f
        states[job_id] = RQState(
            status=status,
            attempt=int(attempt) if attempt != "-" else None,
            worker_name=name or None,
            worker_alive=alive.get(name) if name in alive else None,
            job_beating=beat != "-" and (attempt == "-" or beat == attempt),
            error=errors.get(job_id),
        )
    return states
