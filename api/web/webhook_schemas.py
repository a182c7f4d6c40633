"""The webhooks API's requests and answers (``/api/webhooks``) and a job's trackers, as pydantic models: the
same rules as ``api.web.schemas`` (whose ``Model`` they use), kept apart so the webhooks stay in their own files."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool

from api.web.schemas import CONTROL, JobId, Model, Timestamp

EventName = Literal["completed", "failed", "cancelled", "paused", "preempted", "sweep_finished"]
Url = Annotated[str, Field(min_length=8, max_length=2000, pattern=rf"^[Hh][Tt][Tt][Pp][Ss]?://[^{CONTROL}\s]+$",
                           description="http(s) URL the deliveries are POSTed to; one that reaches a refused "
                                       "address (loopback, private, link-local, metadata) is a 403")]


class WebhookFilter(Model):
    task: str | None = Field(None, min_length=1, max_length=64, description="only jobs (and sweeps) of this task")
    owner: str | None = Field(None, min_length=1, max_length=64,
                              description='only jobs (and sweeps) of this user: "me", or (admins) any user\'s '
                                          "name; left out: a user's own, an admin's: everyone's")


class WebhookCreate(Model):
    """``POST /api/webhooks``."""

    url: Url
    events: list[EventName] = Field(min_length=1, max_length=6, description="a job's end or pause; sweep_finished: "
                                    "a sweep's end (completed, stopped or failed), its body the sweep's summary; "
                                    "preempted is accepted but does not fire yet (preemption is not built)")
    filter: WebhookFilter | None = None
    format: Literal["json", "slack"] = Field("json", description="slack: a chat message (Slack's incoming webhooks)")


class WebhookUpdate(Model):
    """``PATCH /api/webhooks/<id>``: enabling forgets its failures and why it was disabled."""

    enabled: StrictBool | None = None
    events: list[EventName] | None = Field(None, min_length=1, max_length=6)


class WebhookFilterOut(Model):
    task: str | None
    owner: str | None


class Webhook(Model):
    id: int
    owner: str
    url: str
    events: list[str]
    filter: WebhookFilterOut
    format: str
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    created_at: Timestamp


class WebhookCreated(Model):
    """A new webhook, with its signing secret: shown this once."""

    webhook: Webhook
    secret: str = Field(description="signs every delivery (X-Trainq-Signature); shown only now")
    message: str


class Webhooks(Model):
    webhooks: list[Webhook]


class Delivery(Model):
    id: JobId = Field(description="the idempotency key every try of this delivery carries (X-Trainq-Delivery)")
    hook_id: int
    event: str
    job_id: JobId | None
    sweep_id: JobId | None = Field(description="the sweep whose end this is (sweep_finished), else null")
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: Timestamp
    last_attempt_at: Timestamp | None
    next_attempt_at: Timestamp | None
    delivered_at: Timestamp | None


class Deliveries(Model):
    deliveries: list[Delivery]


class Done(Model):
    success: bool
    message: str


class JobTrackers(Model):
    """Where a job's reports went besides its row (null before a worker ran it)."""

    job_id: JobId
    tensorboard_dir: str | None
    tensorboard_command: str | None
    mlflow_run_id: str | None
    mlflow_url: str | None
    lost_reports: int
