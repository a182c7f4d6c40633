"""RQ, the delivery: enqueue a row's attempt (``ensure_enqueued``: the one way work reaches RQ, under the row's
lock), stop running work, the one job class workers run, and many RQ states read in one round trip.

Apart from ``ensure_enqueued``, everything here talks to Redis only; callers decide what a state means for the
row. Nothing a user wrote goes into RQ's fields: an RQ job carries the row's id and attempt, nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
import zlib
from base64 import b64decode
from collections.abc import Iterable
from typing import Any, NamedTuple

import psutil
from flask import current_app
from redis import Redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import DeserializationError, InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import Worker
from rq.worker_registration import WORKERS_BY_QUEUE_KEY
from sqlalchemy import select, update

from api.record.status import JobStatus
from api.record.tables import Host, Reservation, TrainingJob
from api.stores import db, redis_connection

JOB_FUNCTION = "api.worker.run_training_job"
# Job payloads are JSON, never pickle: loading a pickle runs whatever code it names, and anyone who can
# write to Redis could write one. Every Queue, Job and Worker here (and rq-dashboard) uses this.
SERIALIZER = JSONSerializer


class ServiceJob(Job):
    """RQ's Job as this service uses it: JSON payloads whoever fetches it (also code that passes no serializer,
    such as rq-dashboard's job pages), and no code named in Redis ever runs: callbacks a job carries are
    never imported or called (RQ would also call them from its registries' clean-up), webhooks never sent."""

    def __init__(self, id: str | None = None, connection: Redis | None = None, serializer: Any = None) -> None:
        super().__init__(id, connection=connection, serializer=serializer or SERIALIZER)

    @classmethod
    def fetch(cls, id: str, connection: Redis | None = None, serializer: Any = None) -> ServiceJob:
        # JSON whatever the caller passes (RQ's worker passes its own serializer, pickle by default)
        return super().fetch(id, connection=connection, serializer=SERIALIZER)  # type: ignore[return-value]

    success_callback = failure_callback = stopped_callback = property(lambda self: None)  # type: ignore[assignment]

    def send_webhooks(self, *args: Any, **kwargs: Any) -> None:
        return None
_WAITING = {RQStatus.QUEUED, RQStatus.DEFERRED, RQStatus.SCHEDULED, RQStatus.CREATED}


def rq_job_id_for(job_id: str, attempt: int) -> str:
    """The RQ job id of an attempt: the row's id for the first, ``<id>-attempt-<n>`` after that. Each attempt
    owns its RQ state, so nothing RQ records late about an earlier attempt can land on a later one."""
    return str(job_id) if attempt == 1 else f"{job_id}-attempt-{attempt}"


# Our keys beside RQ's. Heartbeat keys exist while their owner beats (their TTL is the timeout).
JOB_HEARTBEAT_PREFIX = "trainq:heartbeat:job:"


def job_heartbeat_key(rq_job_id: str) -> str:
    return JOB_HEARTBEAT_PREFIX + rq_job_id


# The enqueue marker: written in the same MULTI as each enqueue, so Redis holds it exactly when it holds (or held)
# the RQ job. RQ's own deletions (rq-dashboard, ``rq empty``, ``Job.delete()``) remove the job, never the marker;
# a flush, or a restart without persistence, removes both (a snapshot restores both or neither). So an RQ job
# that is gone while its marker stays was deleted on purpose; gone with its marker, Redis lost it.
ENQUEUED_PREFIX = "trainq:enqueued:"


def enqueued_key(rq_job_id: str) -> str:
    return ENQUEUED_PREFIX + rq_job_id


def worker_heartbeat_key(worker_name: str) -> str:
    return f"trainq:heartbeat:worker:{worker_name}"


def beat_value(interval: float, ttl_ms: int) -> str:
    """A job heartbeat key's value: how often it is renewed and the TTL it is set with (milliseconds)."""
    return f"{int(interval * 1000)}:{ttl_ms}"


def fresh_beats(rq_job_ids: Iterable[str]) -> dict[str, bool]:
    """Whether each attempt's heartbeat key was renewed within 1.5 of its own intervals (+ 0.1 s), by Redis's
    clock: its age is the TTL it was set with minus what is left of it. A process whose database session
    ended but whose key is fresh is alive, cut off from PostgreSQL only."""
    ids = list(rq_job_ids)
    if not ids:
        return {}
    pipe = redis_connection.get().pipeline(transaction=False)
    for rq_job_id in ids:
        pipe.pttl(job_heartbeat_key(rq_job_id))
        pipe.get(job_heartbeat_key(rq_job_id))
    replies = pipe.execute()
    fresh = {}
    for rq_job_id, left_ms, value in zip(ids, replies[0::2], replies[1::2], strict=True):
        try:
            interval_ms, ttl_ms = (int(part) for part in (value or b"").split(b":"))
        except ValueError:  # no key, or one written by an older worker
            fresh[rq_job_id] = False
            continue
        fresh[rq_job_id] = left_ms > 0 and ttl_ms - left_ms <= 1.5 * interval_ms + 100
    return fresh


def clear_dead_worker(name: str, wait: float) -> str:
    """Make room for a worker named ``name`` (a fixed ``--name``, as under systemd): RQ refuses to register a
    name whose registration has no death recorded, which is what a SIGKILLed worker leaves for minutes. Such a
    registration whose heartbeat key is gone, or goes within ``wait`` seconds (the key's TTL), belongs to a dead
    worker: it is marked dead. Returns ``"free"``, ``"cleared"`` or ``"alive"`` (a worker of that name beats)."""
    conn = redis_connection.get()
    key = Worker.redis_worker_namespace_prefix + name
    if not conn.exists(key) or conn.hexists(key, "death"):
        return "free"
    deadline = time.monotonic() + wait
    while conn.exists(worker_heartbeat_key(name)):
        if time.monotonic() >= deadline:
            return "alive"
        time.sleep(0.1)
    queues = _text(conn.hget(key, "queues")) or ""
    pipe = conn.pipeline()
    pipe.srem(Worker.redis_workers_keys, key)
    for queue_ in filter(None, queues.split(",")):
        pipe.srem(WORKERS_BY_QUEUE_KEY % queue_, key)
    pipe.hset(key, "death", time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()))
    pipe.expire(key, 60)
    pipe.execute()
    return "cleared"


def control_key(job_id: str) -> str:
    return f"trainq:control:{job_id}"


def queue_name(task: str) -> str:
    """The queue of a task's jobs before the scheduler (``<prefix>.<task>``): jobs enqueued there by an older
    trainq are moved to their host's queue once placed (``ensure_enqueued``)."""
    return f"{current_app.config['QUEUE_NAME']}.{task}"


def host_queue_name(host: str) -> str:
    """One RQ queue per host: the scheduler puts a job there once it holds the host's devices for it, and only
    that host's workers dequeue from it."""
    return f"{current_app.config['QUEUE_NAME']}.host.{host}"


def get_queue(name_or_task: str, connection: Redis | None = None) -> Queue:
    """The RQ queue named ``name_or_task``, or the task queue of a task name."""
    name = name_or_task if name_or_task.startswith(f"{current_app.config['QUEUE_NAME']}.") else \
        queue_name(name_or_task)
    return Queue(name, connection=connection or redis_connection.get(), serializer=SERIALIZER, job_class=ServiceJob)


def task_queues(connection: Redis | None = None) -> list[Queue]:
    """Every queue of the service RQ knows of (hosts' and, from an older trainq, tasks')."""
    prefix = queue_name("")
    return [q for q in Queue.all(connection=connection or redis_connection.get(), serializer=SERIALIZER,
                                 job_class=ServiceJob) if q.name.startswith(prefix)]


def fetch(rq_job_id: str, connection: Redis | None = None) -> Job:
    return ServiceJob.fetch(rq_job_id, connection=connection or redis_connection.get())


def refusal(job: Job) -> str | None:
    """Why a worker must not run ``job`` (None: it is ours to run). A worker runs only ``JOB_FUNCTION``: an RQ
    job that names any other function, a method, or callbacks (RQ imports and calls those too) came from
    somewhere else, say by hand into the queue, and is refused unrun."""
    try:
        func, instance = job.func_name, job.instance
    except DeserializationError:
        return "its payload is not JSON (pickled payloads are never loaded)"
    if func != JOB_FUNCTION or instance is not None:
        return f"it names {str(func)[:200]!r}{' on an object' if instance is not None else ''}; only " \
               f"{JOB_FUNCTION} runs here"
    callbacks = [name for name in (job._success_callback_name, job._failure_callback_name,
                                   job._stopped_callback_name) if name]
    if callbacks:
        return f"it names callbacks {[name[:200] for name in callbacks]!r}; none run here"
    if job.webhooks:
        return "it names webhooks; none are sent from here"
    args, kwargs = job.args, job.kwargs
    if kwargs or len(args) != 2 or not _is_job_id(args[0]) or type(args[1]) is not int or args[1] < 1:
        return f"its arguments {str(args)[:200]} {str(kwargs)[:100]} are not (job id, attempt)"
    return None


def _is_job_id(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def enqueue(job_id: str, attempt: int, queue_name: str) -> Job:
    """Enqueue attempt ``attempt`` of row ``job_id`` under ``rq_job_id_for(job_id, attempt)`` in its task's
    queue. RQ's fields carry no user text (rq-dashboard shows them to admins): the description is the id and
    attempt only. Callers go through ``ensure_enqueued``, which holds the row and checks RQ first."""
    cfg = current_app.config
    rq_id = rq_job_id_for(job_id, attempt)
    queue = get_queue(queue_name)
    with queue.connection.pipeline() as pipe:
        pipe.multi()
        job = queue.enqueue_call(
            JOB_FUNCTION,
            args=(job_id, attempt),
            job_id=rq_id,
            timeout=cfg["JOB_TIMEOUT"],
            result_ttl=cfg["RESULT_TTL"],
            failure_ttl=cfg["RESULT_TTL"],
            description=f"training job {job_id} (attempt {attempt})",
            pipeline=pipe,
        )
        pipe.delete(control_key(job_id))  # a new attempt does not inherit a pause request
        # as long as the row may wait queued, then run: after that a vanished job counts as lost, as before
        pipe.set(enqueued_key(rq_id), 1, ex=cfg["MAX_QUEUE_AGE"] + cfg["JOB_TIMEOUT"])
        pipe.execute()
    return job


def any_worker_of(agent: str, workers: set[str]) -> bool:
    """Whether ``workers`` (names) holds one of the agent's RQ workers: itself (one slot) or one of its pool's
    (``<agent>-<n>``)."""
    return agent in workers or any(name.startswith(f"{agent}-") and name[len(agent) + 1:].isdigit()
                                   for name in workers)


def live_worker_names() -> set[str]:
    """Workers whose heartbeat key exists: the project's one definition of a live worker (RQ's own registry
    keeps a killed worker for minutes)."""
    conn, prefix = redis_connection.get(), worker_heartbeat_key("")
    return {key.decode()[len(prefix):] for key in conn.scan_iter(match=worker_heartbeat_key("*"), count=1000)}


def live_workers() -> int:
    return len(live_worker_names())


# An agent that is starting (importing its task modules) and has not yet published its tasks: a submit of a task
# no worker has published yet is then "retry in a few seconds" (503), not "unknown task" (422). The agent renews
# the key until it has published, then deletes it; one killed meanwhile leaves it for STARTING_TTL seconds.
STARTING_PREFIX = "trainq:agent-starting:"
STARTING_TTL = 30


def starting_key(agent: str) -> str:
    return STARTING_PREFIX + agent


def agents_starting(conn: Redis | None = None) -> list[str]:
    """The agents that said they are starting and have not published their tasks yet."""
    conn = conn or redis_connection.get()
    return sorted(key.decode()[len(STARTING_PREFIX):] for key in conn.scan_iter(match=STARTING_PREFIX + "*",
                                                                                  count=1000))


PAUSED_PREFIX = "trainq:worker-paused:"


def paused_key(worker_name: str) -> str:
    """Redis key saying why a worker takes no jobs (its storage is full or unwritable: ``api.worker.storage``);
    it expires unless the waiting worker renews it."""
    return PAUSED_PREFIX + worker_name


def worker_names(agent: str, slots: int) -> list[str]:
    """The RQ workers of an agent with ``slots`` slots: itself (one slot) or its pool's ``<agent>-<n>``."""
    return [agent] if slots == 1 else [f"{agent}-{i}" for i in range(slots)]


def possible_worker_names(agent: str, slots: int) -> list[str]:
    """Every name a worker of the agent may hold a key under: its own and its pool's (``any_worker_of``'s two forms:
    an agent restarted with another slot count leaves the other form's keys for their TTL)."""
    return [agent, *(f"{agent}-{i}" for i in range(max(slots, 1)))]


def paused_workers(names: Iterable[str] | None = None, conn: Redis | None = None) -> dict[str, str]:
    """Workers that take no jobs now, and why (from their ``paused_key``): of ``names`` (one round trip), or of
    every worker (a scan of the keyspace: not for a hot path)."""
    conn = conn or redis_connection.get()
    if names is None:
        keys = list(conn.scan_iter(match=PAUSED_PREFIX + "*", count=1000))
    else:
        keys = [paused_key(name).encode() for name in names]
    values = conn.mget(keys) if keys else []
    return {key.decode()[len(PAUSED_PREFIX):]: value.decode() for key, value in zip(keys, values, strict=True)
            if value is not None}


def request_pause(job_id: str, user_id: int | None = None) -> None:
    """Ask the running attempt to checkpoint and stop; its heartbeat thread reads this within a beat (and the
    id of the user who asked, for the event of the pause)."""
    value = "pause" if user_id is None else f"pause:{user_id}"
    redis_connection.get().set(control_key(job_id), value, ex=current_app.config["JOB_TIMEOUT"])


def pause_request(control: bytes | None) -> tuple[bool, int | None]:
    """A control key's value read back: whether a pause was asked for, and by which user."""
    if not control or not control.startswith(b"pause"):
        return False, None
    _, _, user = control.partition(b":")
    return True, int(user) if user.isdigit() else None


def running_count() -> int:
    """Jobs RQ lists as started (a read: no registry clean-up runs from here)."""
    return sum(StartedJobRegistry(queue=q).get_job_count(cleanup=False) for q in task_queues())


def queued_count() -> int:
    return sum(q.count for q in task_queues())


def return_value(rq_job_id: str) -> Any:
    """What the job function returned (the final metrics), if RQ still has it."""
    try:
        return fetch(rq_job_id).return_value()
    except NoSuchJobError:
        return None


def pid_alive(pid: int) -> bool:
    """Is ``pid`` a running process on this host? A zombie (killed, not yet reaped) runs no code: not alive."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
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


def stop(rq_job_id: str, *, pid: int | None = None, hostname: str | None = None) -> bool:
    """Stop RQ's job ``rq_job_id``: cancel it if it waits, send RQ's stop-job command if it runs.

    Returns True when RQ acted. For a running job it waits (``CANCEL_WAIT``) until the worker reports
    the horse gone; if the worker never answers and the horse runs on this host, its group is killed.
    """
    conn = redis_connection.get()
    try:
        job = fetch(rq_job_id, conn)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status in _WAITING:
        job.cancel()
        return True
    if status != RQStatus.STARTED:
        return False
    try:
        send_stop_job_command(conn, rq_job_id)
    except (InvalidJobOperation, NoSuchJobError):
        return False
    deadline = time.monotonic() + current_app.config["CANCEL_WAIT"]
    while time.monotonic() < deadline:
        if job.get_status(refresh=True) != RQStatus.STARTED:
            return True
        time.sleep(0.005)
    return _kill_group_on_this_host(pid, hostname)


def delete(rq_job_ids: Iterable[str]) -> None:
    """Delete these RQ jobs from Redis, from whatever list holds them (those already gone are skipped)."""
    conn = redis_connection.get()
    for rq_job_id in rq_job_ids:
        try:
            fetch(rq_job_id, conn).delete()
        except NoSuchJobError:
            pass


class RQState(NamedTuple):  # a NamedTuple: a reconcile pass builds one per active job
    status: str | None  # None: RQ has no such job
    worker_name: str | None = None
    worker_alive: bool | None = None  # for started jobs: does the worker still beat (and, here, exist)
    job_beating: bool = False  # RQ has no such job, but the attempt's heartbeat key exists
    job_beat_fresh: bool | None = None  # read only for attempts whose database session ended (fresh_beats)
    error: str | None = None  # last line of RQ's failure text for failed jobs
    # RQ has no such job but its enqueue marker is there: it was deleted on purpose (False: no marker either, so
    # Redis lost it, or it never arrived)
    removed: bool = False


_STATUS_TEXT: dict[bytes | None, str] = {status.value.encode(): status.value for status in RQStatus}


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


# One server-side call reads, per RQ job, its status and worker_name and, only if RQ has no such job,
# whether its heartbeat key and its enqueue marker are there (a flat reply, four items a job). A
# pipeline of commands per job spends most of its time packing and parsing them in Python.
_READ_JOBS = """
local job_prefix, beat_prefix, marker_prefix = ARGV[1], ARGV[2], ARGV[3]
local out, n = {}, 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local fields = redis.call('HMGET', job_prefix .. id, 'status', 'worker_name')
  local beat, marker = 0, 0
  if not fields[1] then
    beat = redis.call('EXISTS', beat_prefix .. id)
    marker = redis.call('EXISTS', marker_prefix .. id)
  end
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = fields[1], fields[2], beat, marker
  n = n + 4
end
return out
"""
_READ_CHUNK = 5000  # ids per call: bounds how long one call holds Redis


def _read_jobs(conn: Redis, ids: list[str]) -> list[Any]:
    script = conn.register_script(_READ_JOBS)
    prefixes = [Job.redis_job_namespace_prefix, JOB_HEARTBEAT_PREFIX, ENQUEUED_PREFIX]
    replies: list[Any] = []
    for start in range(0, len(ids), _READ_CHUNK):
        replies += script(args=prefixes + ids[start : start + _READ_CHUNK])
    return replies


def fetch_states(rq_job_ids: Iterable[str]) -> dict[str, RQState]:
    """RQ's view of many jobs in two round trips (per 5000 jobs), whatever their number.

    First, in one Lua call, each job hash's ``status``/``worker_name`` (and, if missing, its heartbeat key); then,
    pipelined and only for the workers and failures those name, the workers' heartbeat keys and
    ``pid``/``hostname`` and the latest failure text.
    """
    ids = list(rq_job_ids)
    if not ids:
        return {}
    conn = redis_connection.get()
    flat = _read_jobs(conn, ids)
    # status (None: no such job), worker name, heartbeat key exists (1/0), enqueue marker: one loop, no decoding
    # of the common statuses, and the second round trip only for started and failed jobs
    states: dict[str, RQState] = {}
    started: list[str] = []
    failed: list[str] = []
    for job_id, status, name, beat, marker in zip(ids, flat[0::4], flat[1::4], flat[2::4], flat[3::4],
                                                  strict=True):
        status = _STATUS_TEXT.get(status) or _text(status)
        states[job_id] = RQState(status, name.decode() if name else None, None, beat == 1, removed=marker == 1)
        if status == RQStatus.STARTED and name:
            started.append(job_id)
        elif status == RQStatus.FAILED:
            failed.append(job_id)
    if not started and not failed:
        return states

    workers = sorted({states[job_id].worker_name for job_id in started})
    pipe = conn.pipeline(transaction=False)
    for name in workers:
        pipe.get(worker_heartbeat_key(name))
        pipe.hmget(Worker.redis_worker_namespace_prefix + name, "pid", "hostname")
    for job_id in failed:
        pipe.xrevrange(f"rq:results:{job_id}", count=1)
    more = pipe.execute()
    alive = {name: _worker_alive(more[2 * i], *more[2 * i + 1]) for i, name in enumerate(workers)}
    for job_id in started:
        states[job_id] = states[job_id]._replace(worker_alive=alive[states[job_id].worker_name])
    for job_id, entries in zip(failed, more[2 * len(workers):], strict=True):
        states[job_id] = states[job_id]._replace(error=_error_summary(entries))
    return states


def placed_queue(job_id: str, attempt: int) -> str | None:
    """The queue of the host holding the reservation of the job's attempt (None: not placed)."""
    host = db.session.scalar(select(Host.name).join(Reservation, Reservation.host_id == Host.id).where(
        Reservation.job_id == uuid.UUID(job_id), Reservation.attempt == attempt))
    return host_queue_name(host) if host else None


def ensure_enqueued(job_id: str, attempt: int, reason: str | None = None) -> bool:
    """The one way a row's attempt reaches RQ: under the row's lock, only while the row is queued on that
    attempt and placed (the scheduler wrote its reservation), on its host's queue, and only if RQ has no live job
    for it there. Concurrent callers (the scheduler, the API, reconcilers) enqueue it once. An RQ job an older
    trainq left in its task's queue is moved. Returns True when this call enqueued it."""
    found = db.session.execute(
        select(TrainingJob.id).where(TrainingJob.id == uuid.UUID(job_id), TrainingJob.status == JobStatus.QUEUED,
                                     TrainingJob.attempts == attempt).with_for_update()
    ).one_or_none()
    target = placed_queue(job_id, attempt) if found is not None else None
    if target is None:  # not queued on this attempt any more, or not placed yet: the scheduler's
        db.session.rollback()
        return False
    rq_id = rq_job_id_for(job_id, attempt)
    try:
        status = fetch_states([rq_id])[rq_id].status
        if status == "started":
            db.session.rollback()
            return False
        if status in ("queued", "deferred", "scheduled"):
            stale = fetch(rq_id)
            if stale.origin == target:
                db.session.rollback()
                return False
            stale.delete()  # waiting in a task's queue (an older trainq): it moves to its host's
        enqueue(job_id, attempt, target)
    except BaseException:
        db.session.rollback()
        raise
    values: dict[str, Any] = {"rq_job_id": rq_id, **({"status_reason": reason} if reason else {})}
    db.session.execute(update(TrainingJob).where(TrainingJob.id == uuid.UUID(job_id)).values(**values))
    db.session.commit()
    return True
