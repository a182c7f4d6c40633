"""The record: one row per training job, an append-only log of its status transitions, the users and tokens that
own and act on jobs, the hosts that run them and the scheduler's reservations on them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from api.record import sweep_tables  # noqa: F401  (sweeps: training_jobs.sweep_id's table, in the same metadata)
from api.record.status import TERMINAL, JobStatus
from api.stores import db

_STATUSES = ", ".join(f"'{s.value}'" for s in JobStatus)
_NON_TERMINAL = ", ".join(f"'{s.value}'" for s in JobStatus if s not in TERMINAL)


class User(db.Model):
    """Someone who submits and acts on jobs; an admin acts on every job and reaches /rq, /metrics and cleanup."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer)  # None: MAX_QUEUED_JOBS
    job_disk_limit_mb: Mapped[int | None] = mapped_column(Integer)  # None: JOB_DISK_LIMIT_MB
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "is_admin": self.is_admin, "disabled": self.disabled,
                "max_queued_jobs": self.max_queued_jobs, "job_disk_limit_mb": self.job_disk_limit_mb,
                "created_at": self.created_at.isoformat()}


class ApiToken(db.Model):
    """A bearer token: only its SHA-256 is kept (the token is 32 random bytes, so no slow hash is needed)."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("scope IN ('all', 'metrics')", name="ck_api_tokens_scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16), default="all", server_default="all")  # metrics: /metrics only
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # a logout ends every monitor session made with the token before it (the cookie is the client's)
    sessions_ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(lazy="joined")

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {"id": self.id, "user": self.user.name, "name": self.name, "scope": self.scope,
                "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
                "last_used_at": iso(self.last_used_at), "revoked_at": iso(self.revoked_at)}


INTERNAL_COLUMNS = frozenset({"liveness_key", "liveness_since", "hold_host_id",  # the service's, not the API's
                              "history_recent", "history_length"})  # the read shows them its own way


class TrainingJob(db.Model):
    __tablename__ = "training_jobs"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUSES})", name="ck_training_jobs_status"),
        Index("ix_training_jobs_newest", "created_at", "id"),
        Index("ix_training_jobs_status_newest", "status", "created_at", "id"),
        Index("ix_training_jobs_non_terminal", "status", postgresql_where=f"status IN ({_NON_TERMINAL})"),
        Index("ix_training_jobs_task_newest", "task", "created_at", "id"),
        Index("ix_training_jobs_owner_status", "owner_id", "status"),
        Index("ix_training_jobs_owner_newest", "owner_id", "created_at", "id"),
        Index("ix_training_jobs_sweep_trial", "sweep_id", "trial_number", unique=True),
        # and, where the server has pg_trgm, ix_training_jobs_name_trgm for name substrings (migration 0008)
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id"))  # who submitted it
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(Text)
    task: Mapped[str] = mapped_column(String(64))  # a task some worker published (api.service.catalogue)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)  # checked against the task's published schema
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)  # as the task said (``ctx.total_steps``)
    total_epochs: Mapped[int | None] = mapped_column(Integer)  # as the task said (``ctx.total_epochs``)
    # the task's primary metric when it was submitted (``@task(metric=, mode=)``): the list's main column
    metric: Mapped[str | None] = mapped_column(String(100))
    metric_mode: Mapped[str | None] = mapped_column(String(3))  # min | max: which way is better
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # what the task reported: every report with an epoch, and step-only reports sampled (one per progress write);
    # deferred: a read of the row (a status write, the job page's polls of events, logs, checkpoints) never loads
    # it (100k epochs: 13 MB to detoast and parse); only touching ``job.history`` does
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"),
                                                          deferred=True)
    # the last 1,000 entries of history and how many it holds (what the job's read shows: it never reads history),
    # kept equal to it by the trigger trg_training_jobs_history_recent (migration 0012) in every write of it
    history_recent: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), deferred=True, deferred_raiseload=True)
    history_length: Mapped[int] = mapped_column(Integer, server_default="0")
    rq_job_id: Mapped[str | None] = mapped_column(String(64))
    worker_name: Mapped[str | None] = mapped_column(String(200))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    hostname: Mapped[str | None] = mapped_column(String(255))
    # the running attempt's liveness lock (api.record.locks, namespace ATTEMPT), held by its own database session
    liveness_key: Mapped[int | None] = mapped_column(Integer)
    liveness_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the server's clock
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    resume_from: Mapped[str | None] = mapped_column(Text)  # checkpoint the next attempt starts from
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    log_truncated: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # the job this one was submitted as a copy of ("Run again"); NULL again if that row is deleted
    cloned_from: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("training_jobs.id", ondelete="SET NULL"))
    # what it needs ({gpus, cpus, memory_gb}: the submit's, then its task's, then the defaults)
    resources: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # waited past MAX_BACKFILL_WAIT: the host whose devices are held for it as they free up (the scheduler's)
    hold_host_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("hosts.id", ondelete="SET NULL"))
    # what ran its newest attempt (api.worker.provenance): code version, package, git commit, library versions
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # fail when an objective metric is not finite: the submit's choice (None: its task's, @task(fail_on_nan=))
    fail_on_nan: Mapped[bool | None] = mapped_column(Boolean)
    # a sweep's trial (api.record.sweep_tables): its sweep and Optuna's trial number, written with the row
    sweep_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("sweeps.id", ondelete="SET NULL"))
    trial_number: Mapped[int | None] = mapped_column(Integer)
    pruned_at: Mapped[int | None] = mapped_column(Integer)  # the epoch (or step) its pruner stopped it at

    owner: Mapped[User] = relationship(foreign_keys=[owner_id])
    # the scheduler's reservation for the current attempt (None while it waits to be placed). Loaded when read:
    # a status write loads its row twice and never reads it (two more queries each, on a worker's path to the
    # task); a query that renders many rows' placements asks for it (``selectinload``).
    reservation: Mapped[Reservation | None] = relationship(
        primaryjoin="and_(TrainingJob.id == foreign(Reservation.job_id), "
                    "TrainingJob.attempts == foreign(Reservation.attempt))",
        viewonly=True, uselist=False, lazy="select")

    def placement(self) -> dict[str, Any] | None:
        """Where its current attempt runs: host, worker, GPUs (indices and UUIDs), CPUs; None while it waits."""
        r = self.reservation
        if r is None:
            return None
        uuids = {g.idx: g.uuid for g in r.host.gpus}
        return {"host": r.host.name, "worker": self.worker_name if self.status == JobStatus.RUNNING else None,
                "gpus": list(r.gpus), "gpu_uuids": [uuids.get(i, "") for i in r.gpus], "cpus": r.cpus,
                "cpu_ids": list(r.cpu_ids), "memory_gb": r.memory_mb / 1024 if r.memory_mb else None}

    def to_dict(self, now: datetime | None = None, stale_after: float | None = None,
                exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Every column but ``exclude``, plus ``heartbeat_age_seconds`` and ``stale``: a running row whose
        heartbeat is older than ``stale_after`` seconds, which the reconciler has not acted on yet."""
        data = {column.name: getattr(self, column.name) for column in self.__table__.columns
                if column.name not in exclude and column.name not in INTERNAL_COLUMNS}
        data["id"] = str(self.id)
        if "resources" in data and data["resources"] is not None:
            data["resources"] = {"gpus": 0, "cpus": 1, "memory_gb": None, **data["resources"]}
        data["placement"] = self.placement()
        if "metrics" in data:  # deprecated, kept for older clients: the newest train_loss or loss (a number)
            loss = (self.metrics or {}).get("train_loss", (self.metrics or {}).get("loss"))
            data["loss"] = loss if isinstance(loss, int | float) else None
        for column in ("cloned_from", "sweep_id"):
            if column in data:
                data[column] = str(data[column]) if data[column] else None
        age = max(0.0, (now - self.heartbeat_at).total_seconds()) if now and self.heartbeat_at else None
        data["heartbeat_age_seconds"] = round(age, 3) if age is not None else None
        data["stale"] = bool(
            self.status == JobStatus.RUNNING and stale_after is not None and (age is None or age > stale_after)
        )
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
        return data


class JobMetricValue(db.Model):
    """A job's newest value of one numeric metric, for sorting the list by it. Written only by the trigger
    ``trg_training_jobs_metric_values`` (migration 0008), which keeps these rows equal to ``training_jobs.metrics``
    (and ``created_at``)."""

    __tablename__ = "job_metric_values"
    __table_args__ = (Index("ix_job_metric_values_sort", "name", "value", "created_at", "job_id"),)

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("training_jobs.id", ondelete="CASCADE"),
                                              primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[float] = mapped_column(Float(precision=53))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the job's: the keyset's tie-break


class JobEvent(db.Model):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("training_jobs.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(32))
    actor_user_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("users.id"))  # the user who asked, if any
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    actor_user: Mapped[User | None] = relationship()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job_id": str(self.job_id),
            "from_status": self.from_status,
            "to_status": self.to_status,
            "reason": self.reason,
            "actor": self.actor,
            "user": self.actor_user.name if self.actor_user else None,
            "at": self.at.isoformat(),
        }


class JobLogLine(db.Model):
    """One line of a job's log, saved when its attempt ends (while it runs, lines live in Redis)."""

    __tablename__ = "job_log_lines"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("training_jobs.id", ondelete="CASCADE"),
                                              primary_key=True)
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    line: Mapped[str] = mapped_column(Text)


class TaskOffer(db.Model):
    """A task one worker offers, as it published it when it started."""

    __tablename__ = "task_offers"
    __table_args__ = (Index("ix_task_offers_task", "task", "published_at"),)

    worker_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text)
    params_schema: Mapped[dict[str, Any]] = mapped_column(JSONB)
    params_order: Mapped[list[str]] = mapped_column(JSONB)  # JSONB keeps no key order; arrays keep theirs
    code_version: Mapped[str] = mapped_column(String(64))
    module: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str | None] = mapped_column(String(100))  # the task's primary metric, if it declares one
    metric_mode: Mapped[str | None] = mapped_column(String(3))
    resources: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # the task's declared defaults
    hostname: Mapped[str] = mapped_column(String(255))
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobArtifact(db.Model):
    """A file a task saved with ``ctx.save_artifact``; the file lives under ``ARTIFACT_DIR/<job id>/``."""

    __tablename__ = "job_artifacts"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("training_jobs.id", ondelete="CASCADE"),
                                              primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "attempt": self.attempt,
                "created_at": self.created_at.isoformat()}


class Host(db.Model):
    """A worker host as its agent registered it: what it has, and when the database last heard from it. Its
    agent's database session holds the host's advisory lock (``locks.Namespace.HOST``) while it lives."""

    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)  # the agent's name; its RQ workers' prefix
    hostname: Mapped[str] = mapped_column(String(255))
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    slots: Mapped[int] = mapped_column(Integer)  # jobs it runs at once
    fake_gpus: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the database's clock

    gpus: Mapped[list[HostGpu]] = relationship(order_by="HostGpu.idx", lazy="selectin", cascade="all, delete-orphan")


class HostGpu(db.Model):
    __tablename__ = "host_gpus"

    host_id: Mapped[int] = mapped_column(Integer, ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)  # NVML's index (PCI bus order)
    uuid: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    memory_mb: Mapped[int] = mapped_column(Integer)


class Reservation(db.Model):
    """What the scheduler gave one attempt of a job on one host. Written before the job is enqueued; deleted,
    with its GPU holds, by a trigger the moment the row leaves queued/running or moves to another attempt."""

    __tablename__ = "reservations"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("training_jobs.id", ondelete="CASCADE"),
                                              primary_key=True)
    host_id: Mapped[int] = mapped_column(Integer, ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list, server_default="{}")
    cpus: Mapped[int] = mapped_column(Integer)
    cpu_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list, server_default="{}")
    memory_mb: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))

    host: Mapped[Host] = relationship(lazy="joined")


class GpuHold(db.Model):
    """One held GPU. Its primary key, (host, GPU), is the rule that no device is ever held twice."""

    __tablename__ = "gpu_holds"
    __table_args__ = (
        ForeignKeyConstraint(["job_id", "host_id"], ["reservations.job_id", "reservations.host_id"],
                             ondelete="CASCADE"),
        ForeignKeyConstraint(["host_id", "gpu"], ["host_gpus.host_id", "host_gpus.idx"], ondelete="CASCADE"),
    )

    host_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gpu: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid)

