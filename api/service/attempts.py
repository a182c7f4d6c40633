"""A job's attempts as its transition log tells them: when each started training and when it stopped, so a job
paused and resumed (or retried) shows its first start and the whole time it spent training, not only its newest
attempt's (issue 23, item 11)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select

from api.record.status import JobStatus
from api.record.tables import JobEvent
from api.stores import db

_ATTEMPT = re.compile(r"\(attempt (\d+)\)")
_WORKER = re.compile(r"started by worker (\S+)")


def runs(job_id: uuid.UUID, now: datetime) -> list[dict[str, Any]]:
    """Each time the job entered ``running``, oldest first: ``attempt``, ``worker``, ``started_at``, ``ended_at``
    (null while it runs), ``ended_as`` (the status it left running for) and ``seconds`` (to its end, or to ``now``:
    PostgreSQL's clock, which wrote the events)."""
    events = db.session.execute(
        select(JobEvent.from_status, JobEvent.to_status, JobEvent.reason, JobEvent.at)
        .where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
    return _runs(events, now)


def for_list(job_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """For a page of the list, in one query: each job's ``first_started_at`` and ``ended_runs_seconds`` (the time
    spent in runs that have ended; a running job's current run is counted on from its ``started_at`` by the
    reader, so the answer, and its ETag, stay the same while it runs)."""
    events = db.session.execute(
        select(JobEvent.job_id, JobEvent.from_status, JobEvent.to_status, JobEvent.reason, JobEvent.at)
        .where(JobEvent.job_id.in_(job_ids)).order_by(JobEvent.job_id, JobEvent.id)).all() if job_ids else []
    by_job: dict[uuid.UUID, list[Any]] = {job_id: [] for job_id in job_ids}
    for job_id, *event in events:
        by_job[job_id].append(event)
    found = {}
    for job_id, job_events in by_job.items():
        made = _runs(job_events, None)
        ended = [run["seconds"] for run in made if run["ended_at"]]
        found[job_id] = {"first_started_at": made[0]["started_at"] if made else None,
                         "ended_runs_seconds": round(sum(ended), 3) if made else None}
    return found


def _runs(events: Any, now: datetime | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for from_status, to_status, reason, at in events:
        if current is not None and from_status == JobStatus.RUNNING:
            current.update(ended_at=at, ended_as=to_status)
            current = None
        if to_status == JobStatus.RUNNING:
            number, worker = _ATTEMPT.search(reason or ""), _WORKER.search(reason or "")
            current = {"attempt": int(number[1]) if number else len(found) + 1,
                       "worker": worker[1] if worker and worker[1] != "None" else None,
                       "started_at": at, "ended_at": None, "ended_as": None}
            found.append(current)
    return [{**run, "seconds": round(((run["ended_at"] or now or run["started_at"]) - run["started_at"])
                                     .total_seconds(), 3),
             "started_at": _iso(run["started_at"]), "ended_at": _iso(run["ended_at"])} for run in found]


def summary(job_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    """``runs``, with the first start and the seconds spent training over all of them (the running one to ``now``)."""
    found = runs(job_id, now)
    return {"runs": found, "first_started_at": found[0]["started_at"] if found else None,
            "training_seconds": round(sum(run["seconds"] for run in found), 3) if found else None}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
