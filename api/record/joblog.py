"""Each job's log: captured in its work horse, readable from the API wherever the worker runs.

While an attempt runs, its lines go to a Redis stream whose entry ids are the line numbers (so a cursor
is just a number); when the attempt ends they are saved to PostgreSQL, so the log outlives Redis. Line
numbers continue across attempts. A log past ``LOG_MAX_LINES`` ends with a line saying it was truncated.
"""

from __future__ import annotations

import io
import logging
import sys
import uuid
from typing import Any, TextIO

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from api.record.tables import JobLogLine, TrainingJob

TRUNCATED = "[log truncated: this job wrote more than {} lines]"


def stream_key(job_id: str) -> str:
    return f"trainq:log:{job_id}"


def _n(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


def last_line_number(job_id: str, redis: Redis, engine: Engine) -> int:
    """The highest line number so far, in PostgreSQL or in the stream (0 if none, or if neither answers)."""
    saved = streamed = 0
    try:
        with engine.connect() as conn:
            saved = conn.execute(
                select(func.max(JobLogLine.n)).where(JobLogLine.job_id == uuid.UUID(job_id))
            ).scalar() or 0
    except SQLAlchemyError:
        pass
    try:
        latest = redis.xrevrange(stream_key(job_id), count=1)
        streamed = _n(latest[0][0]) if latest else 0
    except RedisError:
        pass
    return max(saved, streamed)


class JobLogCapture(logging.Handler):
    """A logging handler (plus stdout/stderr tee) for one attempt: every line to Redis as it comes, and all
    of them to PostgreSQL at the end. Never raises into training: a line Redis refuses is still saved."""

    def __init__(self, job_id: str, attempt: int, redis: Redis, engine: Engine, max_lines: int, ttl: int) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.job_id, self.attempt, self.redis, self.engine = job_id, attempt, redis, engine
        self.max_lines, self.ttl = max_lines, ttl
        self.key = stream_key(job_id)
        self.n = last_line_number(job_id, redis, engine)
        self.lines: list[tuple[int, str]] = []
        self.truncated = self.n >= max_lines
        self._streams: tuple[TextIO, TextIO] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a broken record must not break training
            return
        for line in text.splitlines() or [""]:
            self.add(line)

    def add(self, line: str) -> None:
        if self.truncated:
            return
        if self.n + 1 >= self.max_lines:
            self.truncated, line = True, TRUNCATED.format(self.max_lines)
        self.n += 1
        self.lines.append((self.n, line))
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(self.key, {"line": line, "attempt": self.attempt}, id=f"{self.n}-0")
            pipe.expire(self.key, self.ttl)
            pipe.execute()
        except RedisError:
            pass

    def __enter__(self) -> JobLogCapture:
        logging.getLogger().addHandler(self)
        self._streams = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self), _Tee(sys.stderr, self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)
        if self._streams:
            sys.stdout, sys.stderr = self._streams
        self.save()

    def save(self) -> bool:
        """Write this attempt's lines to PostgreSQL (idempotent); False if PostgreSQL is unreachable."""
        rows = [{"job_id": uuid.UUID(self.job_id), "n": n, "attempt": self.attempt, "line": line}
                for n, line in self.lines]
        try:
            with self.engine.begin() as conn:
                for start in range(0, len(rows), 5000):  # on conflict: an earlier save of the same lines
                    conn.execute(pg_insert(JobLogLine).values(rows[start : start + 5000]).on_conflict_do_nothing())
                if self.truncated:
                    conn.execute(update(TrainingJob).where(TrainingJob.id == uuid.UUID(self.job_id))
                                 .values(log_truncated=True))
        except SQLAlchemyError:
            return False
        return True


class _Tee(io.TextIOBase):
    """What the trainer prints still reaches the terminal, and becomes log lines too."""

    def __init__(self, stream: TextIO, capture: JobLogCapture) -> None:
        self.stream, self.capture, self.partial = stream, capture, ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *complete, self.partial = (self.partial + text).split("\n")
        for line in complete:
            self.capture.add(line)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def append(job_id: str, line: str, redis: Redis | None, engine: Engine, attempt: int) -> int | None:
    """Add ``line`` to the job's log from outside its work horse (a cancel says who stopped it and why), after
    whatever the attempt wrote: the lines of an attempt that was killed before it saved them are saved first (they
    are in the stream only), then this one, numbered after them; the stream gets it too. Call it once the horse
    has stopped (it numbers its lines itself). Returns its number, or None when PostgreSQL is unreachable."""
    key = uuid.UUID(job_id)
    try:
        with engine.begin() as conn:
            saved = conn.execute(select(func.max(JobLogLine.n)).where(JobLogLine.job_id == key)).scalar() or 0
            streamed: list[tuple[int, str, int]] = []
            if redis is not None:  # only what PostgreSQL lacks: a killed attempt's tail
                try:
                    streamed = [(_n(entry_id), fields[b"line"].decode(errors="replace"),
                                 int(fields.get(b"attempt", attempt)))
                                for entry_id, fields in redis.xrange(stream_key(job_id), min=f"{saved + 1}-0")]
                except (RedisError, ValueError):
                    streamed = []
            rows = [{"job_id": key, "n": n, "attempt": a, "line": text} for n, text, a in streamed]
            for start in range(0, len(rows), 5000):
                conn.execute(pg_insert(JobLogLine).values(rows[start : start + 5000]).on_conflict_do_nothing())
            n = (conn.execute(select(func.max(JobLogLine.n)).where(JobLogLine.job_id == key)).scalar() or 0) + 1
            conn.execute(pg_insert(JobLogLine).values(job_id=key, n=n, attempt=attempt, line=line)
                         .on_conflict_do_nothing())
    except SQLAlchemyError:
        return None
    if redis is not None:
        try:
            redis.xadd(stream_key(job_id), {"line": line, "attempt": attempt}, id=f"{n}-0")
        except RedisError:  # saved in PostgreSQL, which reads come to first
            pass
    return n


def read(job_id: uuid.UUID, after: int, limit: int, redis: Redis, session: Any) -> list[dict[str, Any]]:
    """Lines numbered above ``after``: saved ones from PostgreSQL, then any newer ones from the stream."""
    saved = session.execute(
        select(JobLogLine.n, JobLogLine.line)
        .where(JobLogLine.job_id == job_id, JobLogLine.n > after).order_by(JobLogLine.n).limit(limit)
    ).all()
    lines = [{"n": n, "line": line} for n, line in saved]
    if len(lines) < limit:
        start = (lines[-1]["n"] if lines else after) + 1
        try:
            entries = redis.xrange(stream_key(str(job_id)), min=f"{start}-0", count=limit - len(lines))
        except RedisError:
            entries = []
        lines += [{"n": _n(entry_id), "line": fields[b"line"].decode(errors="replace")} for entry_id, fields in entries]
    return lines
