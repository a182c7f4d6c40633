"""Webhooks a user registers: who may see and change which (its owner, or any admin), what a hook may listen to
(a non-admin's hooks hear only their own jobs), the URL checked when it is registered (and again at every send,
``api.service.webhook_sender``), and each hook's deliveries with "send again".

The secret that signs a hook's deliveries is made here and returned once, by ``create``; no read shows it again.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import select

from api.record.status import utcnow
from api.record.tables import User
from api.record.webhook_tables import EVENTS, FORMATS, JobTrackers, Webhook, WebhookDelivery
from api.service import webhook_net
from api.service.users import Forbidden
from api.stores import db

MAX_HOOKS_PER_USER = 50
DELIVERIES_SHOWN = 100


class WebhookNotFound(LookupError):
    pass


class WebhookRefused(ValueError):
    """A registration that cannot be made as asked; ``field`` names what to fix."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field


class WebhookConflict(RuntimeError):
    def __init__(self, message: str, code: str = "webhook_disabled") -> None:
        super().__init__(message)
        self.code = code


class UserNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Created:
    hook: Webhook
    secret: str


class UrlRefused(WebhookRefused):
    """A URL the sender may not reach (an address it refuses, credentials in it): a 403."""


def check_destination(url: str) -> None:
    """The URL's form, and every address its host resolves to now (``UrlRefused`` naming why). A name that does
    not resolve now is taken: every send resolves and checks it again."""
    try:
        webhook_net.safe_target(url, bool(current_app.config["WEBHOOK_ALLOW_PRIVATE"]))
    except webhook_net.Unresolvable:
        pass
    except webhook_net.UnsafeUrl as exc:
        raise UrlRefused(f"url: {exc}", "url") from None


def _events(events: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(events))
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown or not chosen:
        raise WebhookRefused(f"events: choose one or more of {', '.join(EVENTS)}", "events")
    return chosen


def _filter_owner(user: User, owner: str | None) -> User | None:
    """The owner a hook's jobs must have: a non-admin's hooks hear only their own jobs; an admin's any owner's
    (``None``: everyone's) or the one named. ``"me"`` is the user."""
    if owner in ("me", user.name) or (owner is None and not user.is_admin):
        return user
    if not user.is_admin:
        raise Forbidden("a webhook hears only its owner's jobs: filter.owner may only be \"me\" (admins may name "
                        "anyone)", "not_owner")
    if owner is None:
        return None
    found = db.session.scalar(select(User).where(User.name == owner))
    if found is None:
        raise UserNotFound(f"filter.owner: no user named {owner!r}")
    return found


def create(user: User, url: str, events: Iterable[str], task: str | None = None, owner: str | None = None,
           fmt: str = "json") -> Created:
    if fmt not in FORMATS:
        raise WebhookRefused(f"format: one of {', '.join(FORMATS)}", "format")
    chosen = _events(events)
    filter_owner = _filter_owner(user, owner)
    count = db.session.scalar(select(db.func.count()).select_from(Webhook).where(Webhook.owner_id == user.id))
    if count >= MAX_HOOKS_PER_USER:
        raise WebhookConflict(f"a user may have at most {MAX_HOOKS_PER_USER} webhooks: delete one first",
                              "too_many_webhooks")
    check_destination(url)
    secret = "whsec_" + secrets.token_urlsafe(32)
    now = utcnow()
    hook = Webhook(owner_id=user.id, url=url, events=chosen, filter_task=task or None,
                   filter_owner_id=filter_owner.id if filter_owner else None, format=fmt, secret=secret,
                   enabled=True, consecutive_failures=0, created_at=now, updated_at=now)
    db.session.add(hook)
    db.session.commit()
    return Created(hook, secret)


def visible(user: User) -> list[Webhook]:
    """A user's own hooks; an admin's view is everyone's."""
    query = select(Webhook).order_by(Webhook.id)
    if not user.is_admin:
        query = query.where(Webhook.owner_id == user.id)
    return list(db.session.scalars(query))


def get(hook_id: int, user: User) -> Webhook:
    """A hook its owner or an admin asks for; to anyone else there is no such hook."""
    hook = db.session.get(Webhook, hook_id) if 0 < hook_id < 2**31 else None
    if hook is None or not (user.is_admin or hook.owner_id == user.id):
        raise WebhookNotFound(f"no webhook {hook_id}")
    return hook


def update(hook_id: int, user: User, enabled: bool | None = None, events: Iterable[str] | None = None) -> Webhook:
    """Enable (which forgets its failures and the reason it was disabled) or disable a hook, or change its events."""
    hook = get(hook_id, user)
    if events is not None:
        hook.events = _events(events)
    if enabled is not None:
        if enabled and not hook.enabled:
            hook.consecutive_failures, hook.disabled_reason = 0, None
        elif not enabled and hook.enabled:
            hook.disabled_reason = f"disabled by {user.name}"
        hook.enabled = enabled
    hook.updated_at = utcnow()
    db.session.commit()
    return hook


def delete(hook_id: int, user: User) -> None:
    hook = get(hook_id, user)
    db.session.delete(hook)
    db.session.commit()


def deliveries(hook_id: int, user: User, limit: int = DELIVERIES_SHOWN) -> list[WebhookDelivery]:
    hook = get(hook_id, user)
    return list(db.session.scalars(select(WebhookDelivery).where(WebhookDelivery.hook_id == hook.id)
                                   .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit)))


def send_again(hook_id: int, delivery_id: uuid.UUID, user: User) -> WebhookDelivery:
    """Queue a delivery again now, with fresh tries; the same idempotency key (it is the same event)."""
    hook = get(hook_id, user)
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.hook_id != hook.id:
        raise WebhookNotFound(f"webhook {hook_id} has no delivery {delivery_id}")
    if not hook.enabled:
        raise WebhookConflict(f"webhook {hook_id} is disabled ({hook.disabled_reason}): enable it first")
    delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, utcnow()
    db.session.commit()
    return delivery


def trackers(job_id: uuid.UUID) -> dict[str, Any] | None:
    """Where a job's reports went besides its row (TensorBoard, MLflow), or None before a worker ran it."""
    row = db.session.get(JobTrackers, job_id)
    return row.to_dict() if row else None
