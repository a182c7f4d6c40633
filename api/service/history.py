"""A job's metric history without reading all of it (issue 21, item 5).

A job's ``history`` grows by one entry an epoch (100k epochs: 13 MB of JSON), and the job page polls its job
every second. So:

- ``GET /api/training/<id>`` carries only the last ``INLINE_POINTS`` entries (``history_truncated`` and
  ``history_length`` say what was left out), cut in PostgreSQL (``jsonb_path_query_array``): the rest never
  leaves the database.
- Its ETag is the row's version: a hash of every column but ``history`` (``updated_at`` changes with every
  write, history included), whether it is stale, and who asks (the actions are theirs). A poll that finds
  nothing changed reads those columns only and answers 304 without building the job.
- ``GET .../history`` keeps the full series, a page at a time (``offset``, ``limit``), or downsampled
  (``points``): min/max per bucket, i.e. the entries split into ``points / 2`` equal buckets of consecutive
  entries, and from each bucket the entries holding each metric's lowest and highest value, in order (every
  spike stays visible). The job page draws long curves from that.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import func, literal, select
from sqlalchemy.orm import defer

from api.record.status import JobNotFound, JobStatus, utcnow
from api.record.tables import TrainingJob, User
from api.stores import db

INLINE_POINTS = 1000
_VERSION_COLUMNS = [column for column in TrainingJob.__table__.columns if column.name != "history"]


def version_tag(job_id: uuid.UUID, user: User | None) -> str:
    """The weak ETag of ``GET /api/training/<id>`` for ``user`` (the actions shown are theirs), from the row's
    columns but ``history``: one short query, no history read."""
    row = db.session.execute(select(*_VERSION_COLUMNS).where(TrainingJob.id == job_id)).one_or_none()
    if row is None:
        raise JobNotFound(str(job_id))
    values = row._mapping
    heartbeat: datetime | None = values["heartbeat_at"]
    age = (utcnow() - heartbeat).total_seconds() if heartbeat else None
    limit = current_app.config["HEARTBEAT_TIMEOUT"]
    stale = values["status"] == JobStatus.RUNNING and (age is None or age > limit)
    who = (user.id, user.is_admin) if user is not None else None
    seed = repr((tuple(values.values()), stale, who, INLINE_POINTS))
    return hashlib.blake2b(seed.encode(), digest_size=12).hexdigest()


def job_without_history(job_id: uuid.UUID) -> tuple[TrainingJob, list[dict[str, Any]], int]:
    """The row (its ``history`` not loaded: don't touch it), the last ``INLINE_POINTS`` entries and how many
    there are."""
    job = db.session.get(TrainingJob, job_id, options=[defer(TrainingJob.history, raiseload=True)])
    if job is None:
        raise JobNotFound(str(job_id))
    length, tail = db.session.execute(
        select(func.jsonb_array_length(TrainingJob.history),
               func.jsonb_path_query_array(TrainingJob.history, literal(f"$[last - {INLINE_POINTS - 1} to last]")))
        .where(TrainingJob.id == job_id)).one()
    return job, list(tail or []), int(length or 0)


def downsample(entries: list[dict[str, Any]], points: int) -> list[dict[str, Any]]:
    """Min/max per bucket (see the module's docstring): at most about ``points`` entries per metric, in order."""
    if len(entries) <= points:
        return entries
    buckets = max(1, points // 2)
    size = math.ceil(len(entries) / buckets)
    kept: list[int] = []
    for start in range(0, len(entries), size):
        chosen = {start, min(start + size, len(entries)) - 1}
        lows: dict[str, tuple[float, int]] = {}
        highs: dict[str, tuple[float, int]] = {}
        firsts: dict[str, int] = {}  # each metric's first non-finite value in the bucket
        for index in range(start, min(start + size, len(entries))):
            for name, value in entries[index].items():
                if isinstance(value, str) and name not in firsts:  # "NaN", "Infinity": the first stays visible
                    firsts[name] = index
                if name in ("epoch", "step") or not isinstance(value, int | float) or isinstance(value, bool):
                    continue
                if name not in lows or value < lows[name][0]:
                    lows[name] = (value, index)
                if name not in highs or value > highs[name][0]:
                    highs[name] = (value, index)
        chosen.update(index for _, index in lows.values())
        chosen.update(index for _, index in highs.values())
        chosen.update(firsts.values())
        kept.extend(sorted(chosen))
    return [entries[index] for index in kept]
