"""A sweep: a search over one task's params, each trial an ordinary job (``TrainingJob.sweep_id`` and
``trial_number``). Optuna's study (its sampler's and pruner's memory) lives in the ``optuna`` schema of the same
database (``api.record.sweep_study``); this row is what trainq itself knows: what was asked, and where it stands."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from api.stores import db


class SweepState(StrEnum):
    RUNNING = "running"  # the driver keeps its trials going
    COMPLETED = "completed"  # every trial it may run has ended
    STOPPED = "stopped"  # its owner (or an admin) stopped it
    FAILED = "failed"  # its first trials all failed: stopped, saying why


class Sweep(db.Model):
    __tablename__ = "sweeps"
    __table_args__ = (
        CheckConstraint("state IN ('running', 'completed', 'stopped', 'failed')", name="ck_sweeps_state"),
        CheckConstraint("objective_mode IN ('min', 'max')", name="ck_sweeps_mode"),
        Index("ix_sweeps_owner_newest", "owner_id", "created_at"),
        Index("ix_sweeps_running", "state", postgresql_where=text("state = 'running'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id"))
    task: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)  # fixed values, every trial's
    space: Mapped[dict[str, Any]] = mapped_column(JSONB)  # {name: {type, low, high, step, log, choices}}
    objective_metric: Mapped[str] = mapped_column(String(100))
    objective_mode: Mapped[str] = mapped_column(String(3))  # min | max
    sampler: Mapped[str] = mapped_column(String(16))  # grid | random | tpe
    pruner: Mapped[str] = mapped_column(String(16))  # none | median | asha
    seed: Mapped[int | None] = mapped_column(Integer)
    max_trials: Mapped[int] = mapped_column(Integer)
    parallel: Mapped[int] = mapped_column(Integer)
    resources: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # each trial's
    state: Mapped[str] = mapped_column(String(16))
    stop_reason: Mapped[str | None] = mapped_column(Text)
    study_name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    owner: Mapped[Any] = relationship("User")  # api.record.tables.User (which imports this module)

    def to_dict(self) -> dict[str, Any]:
        return {"id": str(self.id), "name": self.name, "owner": self.owner.name if self.owner else None,
                "task": self.task, "params": self.params, "space": self.space,
                "objective": {"metric": self.objective_metric, "mode": self.objective_mode},
                "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed, "max_trials": self.max_trials,
                "parallel": self.parallel, "resources": self.resources, "state": self.state,
                "stop_reason": self.stop_reason, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None}
