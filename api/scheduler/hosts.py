"""The hosts: each agent registers what its host has, holds its host's lock (and each of its GPUs' locks) in a
database session of its own while it lives, and says it is alive (``seen_at``, the database's clock). A host is
live while that lock is held: PostgreSQL frees it the moment the agent's session ends, whatever killed it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from api import queue
from api.record import locks
from api.record.tables import Host, HostGpu, Reservation, TaskOffer, TrainingJob
from api.stores import db

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mb: int


@dataclass(frozen=True)
class Inventory:
    """What an agent offers: its host's name, CPUs, memory, GPUs (``fake``: pretend devices), job slots."""

    name: str
    hostname: str
    cpus: int
    memory_mb: int
    slots: int
    gpus: tuple[Gpu, ...] = ()
    fake: bool = False


class HostRefused(RuntimeError):
    """The agent may not register: another live agent has its name, or holds one of its GPUs."""


def register(conn: Connection, inventory: Inventory) -> int:
    """Write the host's row and GPUs, and take its locks in ``conn`` (the agent's own session, autocommit): the
    host's, and each GPU's. Refused, naming the holder, when another live agent holds any of them."""
    existing = conn.execute(select(Host.id, Host.pid, Host.hostname).where(Host.name == inventory.name)).first()
    if existing is not None and not locks.try_lock(conn, locks.Namespace.HOST, existing.id):
        raise HostRefused(f"a live worker named {inventory.name!r} is running (its agent, pid {existing.pid} on "
                          f"{existing.hostname}, holds the host's lease): stop it first, or give this one another "
                          "--name")
    for gpu in inventory.gpus:
        if not locks.try_lock(conn, locks.Namespace.GPU, locks.gpu_key(gpu.uuid)):
            holder = conn.execute(
                select(Host.name, Host.pid, Host.hostname).join(HostGpu, HostGpu.host_id == Host.id)
                .where(HostGpu.uuid == gpu.uuid, Host.name != inventory.name)).first()
            who = f"agent {holder.name} (pid {holder.pid} on {holder.hostname})" if holder else "another agent"
            raise HostRefused(f"GPU {gpu.index} ({gpu.uuid}) is already offered by {who}: start each agent with its "
                              "own devices (--gpus)")
    values = {"hostname": inventory.hostname, "cpus": inventory.cpus, "memory_mb": inventory.memory_mb,
              "slots": inventory.slots, "fake_gpus": inventory.fake, "pid": os.getpid()}
    statement = pg_insert(Host).values(name=inventory.name, started_at=func.now(), seen_at=func.now(), **values)
    host_id = conn.execute(statement.on_conflict_do_update(
        index_elements=[Host.name], set_={**values, "started_at": func.now(), "seen_at": func.now()})
        .returning(Host.id)).scalar_one()
    if existing is None and not locks.try_lock(conn, locks.Namespace.HOST, host_id):
        raise HostRefused(f"an agent named {inventory.name} started at the same moment")
    offered = {gpu.index for gpu in inventory.gpus}
    # devices no longer offered go (their holds with them); the others are updated in place, holds kept
    conn.execute(delete(HostGpu).where(HostGpu.host_id == host_id, HostGpu.idx.not_in(offered or {-1})))
    for gpu in inventory.gpus:
        row = {"uuid": gpu.uuid, "name": gpu.name, "memory_mb": gpu.memory_mb}
        conn.execute(pg_insert(HostGpu).values(host_id=host_id, idx=gpu.index, **row)
                     .on_conflict_do_update(index_elements=[HostGpu.host_id, HostGpu.idx], set_=row))
    return host_id


def seen(conn: Connection, host_id: int) -> None:
    conn.execute(text("UPDATE hosts SET seen_at = now() WHERE id = :id"), {"id": host_id})


def live_host_ids_sql() -> str:
    return locks.held_keys_sql(locks.Namespace.HOST)


def live_hosts() -> list[Host]:
    """Every host whose agent's session holds its lock, with its GPUs."""
    return list(db.session.scalars(select(Host).where(Host.id.in_(text(live_host_ids_sql()))).order_by(Host.name)))


def offered_tasks() -> dict[str, set[str]]:
    """Task names each host (agent name) offers."""
    offered: dict[str, set[str]] = {}
    for worker_name, task in db.session.execute(select(TaskOffer.worker_name, TaskOffer.task)):
        offered.setdefault(worker_name, set()).add(task)
    return offered


def describe() -> list[dict[str, Any]]:
    """Each live host as ``GET /api/hosts`` shows it: its GPUs (and the job holding each), its CPUs and memory
    (total, reserved), the tasks it offers, its workers that take no jobs now and why (a full or unwritable disk;
    None while Redis, which holds that, cannot be read), when it was last seen."""
    hosts = live_hosts()
    offered = offered_tasks()
    try:
        paused: dict[str, str] | None = queue.paused_workers(
            name for host in hosts for name in queue.possible_worker_names(host.name, host.slots))
    except RedisError:
        paused = None
    rows = db.session.execute(
        select(Reservation, TrainingJob.name).join(TrainingJob, TrainingJob.id == Reservation.job_id)
        .where(Reservation.host_id.in_([h.id for h in hosts]))).all()
    db.session.commit()
    answer = []
    for host in hosts:
        mine = [(r, name) for r, name in rows if r.host_id == host.id]
        holder = {gpu: (str(r.job_id), name) for r, name in mine for gpu in r.gpus}
        answer.append({
            "name": host.name, "hostname": host.hostname, "fake_gpus": host.fake_gpus, "slots": host.slots,
            "gpus": [{"index": g.idx, "uuid": g.uuid, "name": g.name, "memory_mb": g.memory_mb,
                      "job": holder[g.idx][0] if g.idx in holder else None,
                      "job_name": holder[g.idx][1] if g.idx in holder else None} for g in host.gpus],
            "cpus": {"total": host.cpus, "reserved": sum(r.cpus for r, _ in mine)},
            "memory_mb": {"total": host.memory_mb, "reserved": sum(r.memory_mb or 0 for r, _ in mine)},
            "jobs": len(mine), "tasks": sorted(offered.get(host.name, ())),
            "paused": None if paused is None else {worker: why for worker, why in paused.items()
                                                   if queue.any_worker_of(host.name, {worker})},
            "started_at": host.started_at.isoformat(), "seen_at": host.seen_at.isoformat(),
        })
    return answer
