"""``/api/webhooks`` (register, list, change, delete hooks; their deliveries, "send again"), the data of the
monitor's ``/webhooks`` page (served by ``pages``), and ``/api/training/<id>/trackers`` (a job's TensorBoard
folder and MLflow run)."""

from __future__ import annotations

import shlex
import uuid
from typing import Any

from flask import Blueprint

from api.service import queries, webhooks
from api.web import schemas as s
from api.web import webhook_schemas as w
from api.web.auth import current_user
from api.web.openapi import operation
from api.web.schemas import ApiError

bp = Blueprint("webhooks", __name__, url_prefix="/api")


def _call(action: Any, *args: Any, **kwargs: Any) -> Any:
    """A service call, its refusals as the API's errors."""
    try:
        return action(*args, **kwargs)
    except webhooks.WebhookNotFound as exc:
        raise ApiError(404, "webhook_not_found", str(exc)) from None
    except webhooks.UrlRefused as exc:
        raise ApiError(403, "url_refused", exc.message, exc.field) from None
    except webhooks.WebhookRefused as exc:
        raise ApiError(422, "invalid_field", exc.message, exc.field) from None
    except webhooks.UserNotFound as exc:
        raise ApiError(404, "user_not_found", str(exc), "filter.owner") from None
    except webhooks.WebhookConflict as exc:
        raise ApiError(409, exc.code, str(exc)) from None


@bp.post("/webhooks")
@operation("Register a webhook (its secret is in this answer only)", {201: w.WebhookCreated}, body=w.WebhookCreate,
           errors=(404, 409))
def create_webhook(body: w.WebhookCreate):
    where = body.filter or w.WebhookFilter()
    created = _call(webhooks.create, current_user(), body.url, body.events, task=where.task, owner=where.owner,
                    fmt=body.format)
    return {"webhook": created.hook.to_dict(), "secret": created.secret,
            "message": "Keep the secret now: it is not shown again. Deliveries carry X-Trainq-Signature: "
                       "t=<time>,v1=HMAC-SHA256(secret, '<time>.' + body)"}, 201


@bp.get("/webhooks")
@operation("Your webhooks (an admin's: everyone's)", {200: w.Webhooks})
def list_webhooks():
    return {"webhooks": [hook.to_dict() for hook in webhooks.visible(current_user())]}


@bp.get("/webhooks/<int:hook_id>")
@operation("One webhook", {200: w.Webhook})
def get_webhook(hook_id: int):
    return _call(webhooks.get, hook_id, current_user()).to_dict()


@bp.patch("/webhooks/<int:hook_id>")
@operation("Enable or disable a webhook, or change its events", {200: w.Webhook}, body=w.WebhookUpdate)
def update_webhook(hook_id: int, body: w.WebhookUpdate):
    return _call(webhooks.update, hook_id, current_user(), enabled=body.enabled, events=body.events).to_dict()


@bp.delete("/webhooks/<int:hook_id>")
@operation("Delete a webhook and its deliveries", {200: w.Done})
def delete_webhook(hook_id: int):
    _call(webhooks.delete, hook_id, current_user())
    return {"success": True, "message": f"webhook {hook_id} deleted"}


@bp.get("/webhooks/<int:hook_id>/deliveries")
@operation("A webhook's deliveries, newest first (the last 100)", {200: w.Deliveries})
def webhook_deliveries(hook_id: int):
    return {"deliveries": [d.to_dict() for d in _call(webhooks.deliveries, hook_id, current_user())]}


@bp.post("/webhooks/<int:hook_id>/deliveries/<uuid:delivery_id>/send-again")
@operation("Send a delivery again (same idempotency key, fresh tries)", {202: w.Delivery}, body=s.EmptyRequest,
           body_optional=True, errors=(409,))
def send_again(hook_id: int, delivery_id: uuid.UUID, body: Any):
    return _call(webhooks.send_again, hook_id, delivery_id, current_user()).to_dict(), 202


@bp.get("/training/<uuid:job_id>/trackers")
@operation("Where a job's reports went besides its row: TensorBoard and MLflow", {200: w.JobTrackers})
def job_trackers(job_id: uuid.UUID):
    return trackers_of(job_id)


def trackers_of(job_id: uuid.UUID) -> dict[str, Any]:
    queries.get_job(str(job_id))  # 404 for no such job
    found = webhooks.trackers(job_id) or {}
    folder = found.get("tensorboard_dir")
    return {"job_id": str(job_id), "tensorboard_dir": folder,
            "tensorboard_command": f"tensorboard --logdir {shlex.quote(folder)}" if folder else None,
            "mlflow_run_id": found.get("mlflow_run_id"), "mlflow_url": found.get("mlflow_url"),
            "lost_reports": found.get("lost_reports", 0)}


def page_data() -> dict[str, Any]:
    """What the monitor's ``/webhooks`` page starts with (the page itself is in ``pages``, so a navigation without a
    token gets its shell as the other pages do): the caller's hooks (an admin's: everyone's), each one's newest
    deliveries, and the events a hook may ask for."""
    user = current_user()
    hooks = [hook.to_dict() for hook in webhooks.visible(user)]
    recent = {hook["id"]: [d.to_dict() for d in webhooks.deliveries(hook["id"], user, 20)] for hook in hooks}
    return {"webhooks": hooks, "deliveries": recent, "events": list(w.EventName.__args__)}
