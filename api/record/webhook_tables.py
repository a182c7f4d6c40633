"""Webhooks (a user's hooks, the outbox of events to send, each hook's deliveries) and each job's trackers.

``webhook_outbox`` is filled by two triggers: ``trg_job_events_webhook_outbox`` (migration 0011): every
``job_events`` row entering one of ``STATUS_EVENTS`` adds one outbox row in the status writer's own transaction,
so an event is queued exactly once per transition, and only if the transition committed; and
``trg_sweeps_webhook_outbox`` (migration 0015): a sweep whose state leaves ``running`` (its one end, written by
``api.service.sweep_driver.finish``) adds one ``sweep_finished`` row (its ``sweep_id``) in that transaction. The
sender (``api.service.webhook_sender``) fans each outbox row out to the hooks that match, one delivery per hook.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from api.record.tables import User
from api.stores import db

STATUS_EVENTS = ("completed", "failed", "cancelled", "paused")
"""Statuses whose entry is an event (the trigger's list in migration 0011)."""
SWEEP_FINISHED = "sweep_finished"
"""A sweep's end (completed, stopped or failed): the trigger's event in migration 0015."""
LATER_EVENTS = ("preempted",)
"""Accepted in a hook's events now; it fires once preemption (issue 22) lands and writes outbox rows."""
EVENTS = STATUS_EVENTS + LATER_EVENTS + (SWEEP_FINISHED,)
FORMATS = ("json", "slack")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class Webhook(db.Model):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSONB)
    filter_task: Mapped[str | None] = mapped_column(String(64))  # only jobs (and sweeps) of this task
    filter_owner_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    format: Mapped[str] = mapped_column(String(16), default="json")
    secret: Mapped[str] = mapped_column(String(64))  # signs every delivery (HMAC-SHA256); shown once
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    owner: Mapped[User] = relationship(foreign_keys=[owner_id])
    filter_owner: Mapped[User | None] = relationship(foreign_keys=[filter_owner_id])

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "owner": self.owner.name, "url": self.url, "events": list(self.events),
                "filter": {"task": self.filter_task,
                           "owner": self.filter_owner.name if self.filter_owner else None},
                "format": self.format, "enabled": self.enabled, "disabled_reason": self.disabled_reason,
                "consecutive_failures": self.consecutive_failures, "created_at": _iso(self.created_at)}


class WebhookOutbox(db.Model):
    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("job_events.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("training_jobs.id", ondelete="CASCADE"))
    sweep_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("sweeps.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fanned_out_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(db.Model):
    """One event for one hook. Its ``id`` is the idempotency key every attempt (and "send again") carries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("hook_id", "outbox_id", name="uq_webhook_deliveries_hook_event"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    hook_id: Mapped[int] = mapped_column(Integer, ForeignKey("webhooks.id", ondelete="CASCADE"))
    outbox_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("webhook_outbox.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    sweep_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    event: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def to_dict(self) -> dict[str, Any]:
        return {"id": str(self.id), "hook_id": self.hook_id, "event": self.event,
                "job_id": str(self.job_id) if self.job_id else None,
                "sweep_id": str(self.sweep_id) if self.sweep_id else None, "status": self.status,
                "attempts": self.attempts, "last_status_code": self.last_status_code, "last_error": self.last_error,
                "created_at": _iso(self.created_at), "last_attempt_at": _iso(self.last_attempt_at),
                "next_attempt_at": _iso(self.next_attempt_at) if self.status == "pending" else None,
                "delivered_at": _iso(self.delivered_at)}


class JobTrackers(db.Model):
    """Where a job's reports went besides its row: its TensorBoard folder and its MLflow run (the worker's)."""

    __tablename__ = "job_trackers"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("training_jobs.id", ondelete="CASCADE"),
                                              primary_key=True)
    tensorboard_dir: Mapped[str | None] = mapped_column(Text)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    mlflow_url: Mapped[str | None] = mapped_column(Text)
    lost_reports: Mapped[int] = mapped_column(Integer, default=0)  # reports a tracker never took (an outage)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    def to_dict(self) -> dict[str, Any]:
        return {"tensorboard_dir": self.tensorboard_dir, "mlflow_run_id": self.mlflow_run_id,
                "mlflow_url": self.mlflow_url, "lost_reports": self.lost_reports,
                "updated_at": _iso(self.updated_at)}
