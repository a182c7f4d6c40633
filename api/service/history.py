"""A job's metric history without reading all of it (issue 21, item 5).

A job's ``history`` grows by one entry an epoch (100k epochs: 13 MB of JSON), and the job page polls its job
every second. So:

- ``GET /api/training/<id>`` carries only the last ``INLINE_POINTS`` entries (``history_truncated`` and
  ``history_length`` say what was left out). They are stored apart, in the row's ``history_recent`` (and the
  count in ``history_length``), which a trigger keeps equal to the end of ``history`` in every write of it
  (migration 0012): the read never reads ``history`` itself, which PostgreSQL would detoast whole to cut it.
  ``history_recent`` goes out as the JSON text PostgreSQL writes for it, unparsed (``job_and_recent``).
  ``history`` is deferred in the mapping, so no other read of a row (a status write, the job page's polls of
  events, logs, checkpoints, artifacts) loads it either.
- Its ETag is the row's version: a hash of every column but ``history`` and ``history_recent`` (``updated_at``
  changes with every write, history included, and ``history_length`` with every report), whether it is stale,
  and who asks (the actions are theirs). A poll that finds nothing changed reads those columns only and
  answers 304 without building the job.
- ``GET .../history`` keeps the full series, a page at a time (``offset``, ``limit``), or downsampled
  (``points``): min/max per bucket, i.e. the entries split into ``points / 2`` equal buckets of consecutive
  entries, and from each bucket the entries holding each metric's lowest and highest value, in order (every
  spike stays visible). The job page draws long curves from that.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from typing import Any

from flask import current_app
from sqlalchemy import Text, cast, func, select, tuple_
from sqlalchemy.orm import defer, joinedload

from api.record.status import JobNotFound, JobStatus
from api.record.tables import TrainingJob, User
from api.stores import db

INLINE_POINTS = 1000
_VERSION_COLUMNS = [column for column in TrainingJob.__table__.columns
                    if column.name not in ("history", "history_recent")]


def version_tag(job_id: uuid.UUID, user: User | None) -> str:
    """The weak ETag of ``GET /api/training/<id>`` for ``user`` (the actions shown are theirs), from the row's
    columns but the history's, hashed where they are (whatever a job's params or error weigh, a 32-character
    answer): one short query by the primary key, no history read."""
    row = db.session.execute(select(func.md5(cast(tuple_(*_VERSION_COLUMNS), Text)), TrainingJob.status,
                                    func.extract("epoch", func.statement_timestamp() - TrainingJob.heartbeat_at))
                             .where(TrainingJob.id == job_id)).one_or_none()
    if row is None:
        raise JobNotFound(str(job_id))
    version, status, age = row  # the heartbeat's age on the clock that wrote it (PostgreSQL's), not this host's
    limit = current_app.config["HEARTBEAT_TIMEOUT"]
    stale = status == JobStatus.RUNNING and (age is None or age > limit)
    who = (user.id, user.is_admin) if user is not None else None
    seed = repr((version, stale, who, INLINE_POINTS))
    return hashlib.blake2b(seed.encode(), digest_size=12).hexdigest()


def job_and_recent(job_id: uuid.UUID) -> tuple[TrainingJob, str, int]:
    """The row (its ``history`` not loaded: don't touch it), the last ``INLINE_POINTS`` entries as the JSON text
    PostgreSQL writes for ``history_recent`` (a JSON array: a read passes it on as it is, since parsing 1,000
    reports and writing them again costs a poll more than the rest of it), and how many entries there are."""
    found = db.session.execute(
        select(TrainingJob, cast(TrainingJob.history_recent, Text)).where(TrainingJob.id == job_id)
        .options(defer(TrainingJob.history, raiseload=True),  # one query: the owner and placement joined
                 joinedload(TrainingJob.owner), joinedload(TrainingJob.reservation))).one_or_none()
    if found is None:
        raise JobNotFound(str(job_id))
    job, recent = found
    return job, recent or "[]", int(job.history_length or 0)


def truncated(length: int) -> bool:
    """Whether the read's history (``history_recent``) leaves out older entries of a history of ``length``."""
    return length > INLINE_POINTS


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
