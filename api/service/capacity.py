"""A submit's resources against the hosts there are: a job no live host offering its task could ever run (it asks
16 GPUs, the biggest such host has 8) is refused at once, naming that host; with no live host offering it (none
registered yet, or all down for a moment), it is accepted with a warning and waits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text

from api.record.tables import Host, TaskOffer
from api.scheduler.hosts import live_host_ids_sql
from api.service.catalogue import TaskRejected
from api.stores import db


def _size(host: Host) -> dict[str, float]:
    return {"gpus": len(host.gpus), "cpus": host.cpus, "memory_gb": host.memory_mb / 1024}


_WORDS = {"gpus": "GPUs", "cpus": "CPUs", "memory_gb": "GB of memory"}


def refuse_impossible(task: str, needs: dict[str, Any]) -> None:
    """Raise ``TaskRejected`` (a 422 whose field is ``resources.<what>``) when no live host offering ``task`` is big
    enough for ``needs`` in one of them."""
    hosts = [(host.name, _size(host)) for host in db.session.scalars(select(Host).where(
        Host.name.in_(select(TaskOffer.worker_name).where(TaskOffer.task == task)),
        Host.id.in_(text(live_host_ids_sql()))))]
    db.session.commit()  # after the rows are read: a commit expires them
    if not hosts:
        return None  # none registered yet, or none live now: accepted, and "no live worker offers task ..." says so
    for what in ("gpus", "cpus", "memory_gb"):
        asked = needs.get(what)
        if not asked:
            continue
        name, size = max(hosts, key=lambda host: host[1][what])
        if size[what] < asked:
            raise TaskRejected(
                "too_big", f"resources.{what}: asks {asked:g} {_WORDS[what]}, and no live host offering task "
                f"{task} has that many: the biggest, {name}, has {size[what]:g}",
                f"resources.{what}")
    return None
