"""The webhook sender: events from the outbox to the hooks that asked for them, at least once.

- ``fan_out``: each new ``webhook_outbox`` row (written by a trigger in the status writer's own transaction:
  once per transition, only if it committed; or by one on ``sweeps`` in the transaction that ends a sweep) becomes
  one delivery per matching, enabled hook (a sweep's event matched on the sweep's task and owner), and is marked
  fanned out, in one transaction; rows are taken with ``SKIP LOCKED``, so several senders never double them.
- ``deliver_due``: a due delivery is claimed first (its try counted, and it is not due again until the try's
  time limit has long passed) and committed, then sent, then its outcome written. A sender killed between claim
  and outcome leaves the delivery to be sent again once the claim runs out: at least once, and every try of a
  delivery carries the same idempotency key (``X-Trainq-Delivery``, also ``Idempotency-Key``), so a receiver can
  act once.
- A failed try waits ``WEBHOOK_RETRY_BASE`` doubled per try (at most an hour); after ``WEBHOOK_MAX_ATTEMPTS`` the
  delivery is failed. A hook whose tries failed ``WEBHOOK_DISABLE_AFTER`` times in a row is disabled, saying why.

``run`` loops (``flask --app api webhooks send``, and a thread of the reconciler).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError

from api.record.status import utcnow
from api.record.sweep_tables import Sweep
from api.record.tables import JobEvent, TrainingJob
from api.record.webhook_tables import Webhook, WebhookDelivery, WebhookOutbox
from api.service import sweeps, webhook_net
from api.stores import db
from trainq.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

FAN_OUT_BATCH = 100
CLAIM_MARGIN = 5.0  # seconds past a try's time limit before a claimed delivery is due again
MAX_BACKOFF = 3600.0
SLACK_ICONS = {"completed": ":white_check_mark:", "failed": ":x:", "cancelled": ":no_entry_sign:",
               "paused": ":double_vertical_bar:", "preempted": ":arrows_counterclockwise:",
               "sweep_finished": ":checkered_flag:"}


def fan_out() -> int:
    """Turn new outbox rows into deliveries; the number of outbox rows taken."""
    rows = list(db.session.scalars(select(WebhookOutbox).where(WebhookOutbox.fanned_out_at.is_(None))
                                   .order_by(WebhookOutbox.id).limit(FAN_OUT_BATCH)
                                   .with_for_update(skip_locked=True)))
    if not rows:
        db.session.rollback()
        return 0
    hooks = list(db.session.scalars(select(Webhook).where(Webhook.enabled.is_(True))))
    now = utcnow()
    for row in rows:
        subject = (db.session.get(TrainingJob, row.job_id) if row.job_id
                   else db.session.get(Sweep, row.sweep_id) if row.sweep_id else None)
        for hook in hooks:
            if _matches(hook, row.event, subject):
                db.session.execute(pg_insert(WebhookDelivery).values(
                    id=uuid.uuid4(), hook_id=hook.id, outbox_id=row.id, job_id=row.job_id, sweep_id=row.sweep_id,
                    event=row.event, status="pending", attempts=0, next_attempt_at=now, created_at=now,
                ).on_conflict_do_nothing(constraint="uq_webhook_deliveries_hook_event"))
        row.fanned_out_at = now
    db.session.commit()
    return len(rows)


def _matches(hook: Webhook, event: str, subject: TrainingJob | Sweep | None) -> bool:
    """Whether ``hook`` hears this event of a job or a sweep (both have a task and an owner): its events, its
    filter, and a non-admin's hook only of their own."""
    if subject is None or event not in hook.events or hook.owner.disabled:
        return False
    if hook.filter_task and subject.task != hook.filter_task:
        return False
    if hook.filter_owner_id is not None and subject.owner_id != hook.filter_owner_id:
        return False
    return hook.owner.is_admin or subject.owner_id == hook.owner_id


def payload(delivery: WebhookDelivery, hook: Webhook, config: Mapping[str, Any]) -> dict[str, Any]:
    """What a delivery says: the event, the transition, and the job's summary with a link to its page; for a
    sweep's end, the sweep's summary (its best trial, its trials by status) with a link to its page."""
    outbox = db.session.get(WebhookOutbox, delivery.outbox_id)
    event = db.session.get(JobEvent, outbox.event_id) if outbox and outbox.event_id else None
    job = db.session.get(TrainingJob, delivery.job_id) if delivery.job_id else None
    sweep = db.session.get(Sweep, delivery.sweep_id) if delivery.sweep_id else None
    monitor = config["MONITOR_URL"].rstrip("/")
    body: dict[str, Any] = {"id": str(delivery.id), "event": delivery.event, "event_id": delivery.outbox_id,
                            "occurred_at": _iso(event.at if event else outbox.created_at if outbox else None)}
    if event is not None:
        body["transition"] = {"from": event.from_status, "to": event.to_status, "reason": event.reason,
                              "actor": event.actor}
    if job is not None:
        body["job"] = {"id": str(job.id), "name": job.name, "task": job.task,
                       "owner": job.owner.name if job.owner else None, "status": job.status,
                       "status_reason": job.status_reason, "attempts": job.attempts, "epoch": job.epoch,
                       "step": job.step, "metrics": job.metrics, "created_at": _iso(job.created_at),
                       "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at),
                       "url": f"{monitor}/jobs/{job.id}"}
    if sweep is not None:
        body["sweep"] = sweep_summary(sweep, monitor)
    return slack(body) if hook.format == "slack" else body


def sweep_summary(sweep: Sweep, monitor: str) -> dict[str, Any]:
    """A sweep's end as a delivery tells it: what it searched, how it ended, its best trial and its trials."""
    found = sweeps.trials(sweep)
    top = sweeps.best(sweep, found)
    best = None if top is None else {"number": top.number, "job_id": str(top.job.id), "params": top.params,
                                     "objective": top.value, "url": f"{monitor}/jobs/{top.job.id}"}
    return {"id": str(sweep.id), "name": sweep.name, "task": sweep.task,
            "owner": sweep.owner.name if sweep.owner else None, "state": sweep.state,
            "stop_reason": sweep.stop_reason,
            "objective": {"metric": sweep.objective_metric, "mode": sweep.objective_mode},
            "best": best, "trials": len(found),
            "trial_counts": dict(Counter(trial.job.status for trial in found)), "max_trials": sweep.max_trials,
            "created_at": _iso(sweep.created_at), "finished_at": _iso(sweep.finished_at),
            "url": f"{monitor}/sweeps/{sweep.id}"}


def slack(body: dict[str, Any]) -> dict[str, Any]:
    """A delivery as a Slack (or Mattermost, Rocket.Chat) incoming-webhook message."""
    job = body.get("job")
    icon = SLACK_ICONS.get(body["event"], "")
    if body.get("sweep") is not None:
        return {"text": _slack_sweep(body["sweep"], icon)}
    if job is None:
        return {"text": f"{icon} trainq: {body['event']}"}
    reason = (body.get("transition") or {}).get("reason") or job["status_reason"] or ""
    metrics = ", ".join(f"{k}={_number(v)}" for k, v in list((job["metrics"] or {}).items())[:4])
    lines = [f"{icon} Job *{_slack_escape(job['name'])}* ({job['task']}, {job['owner']}) {body['event']}"
             + (f": {_slack_escape(reason)}" if reason else ""),
             *([f"Metrics: {metrics}"] if metrics else []),
             f"<{job['url']}|Open job {job['id'][:8]} in trainq>"]
    return {"text": "\n".join(lines)}


def _slack_sweep(sweep: dict[str, Any], icon: str) -> str:
    """E.g. ``Sweep *lr search* (mlp, alice) completed: all 6 trials ended`` / ``Best: trial #3 val_loss=0.1234
    (lr=0.01)`` / ``Trials: 5 completed, 1 failed`` / a link to its page."""
    reason = sweep["stop_reason"] or ""
    lines = [f"{icon} Sweep *{_slack_escape(sweep['name'])}* ({sweep['task']}, {sweep['owner']}) {sweep['state']}"
             + (f": {_slack_escape(reason)}" if reason else "")]
    best = sweep["best"]
    if best is not None:
        params = ", ".join(f"{k}={_number(v)}" for k, v in list(best["params"].items())[:6])
        lines.append(f"Best: trial #{best['number']} {sweep['objective']['metric']}={_number(best['objective'])}"
                     + (f" ({_slack_escape(params)})" if params else ""))
    else:
        lines.append("Best: none (no trial completed with its objective)")
    if sweep["trial_counts"]:
        lines.append("Trials: " + ", ".join(f"{n} {status}" for status, n in sorted(sweep["trial_counts"].items())))
    lines.append(f"<{sweep['url']}|Open sweep {sweep['id'][:8]} in trainq>")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _slack_escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _claim(config: Mapping[str, Any]) -> WebhookDelivery | None:
    """The next due delivery of an enabled hook, its try counted and committed before anything is sent."""
    hold = timedelta(seconds=float(config["WEBHOOK_TIMEOUT"]) + webhook_net.RESOLVE_TIMEOUT + CLAIM_MARGIN)
    row = db.session.execute(text(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = now(),"
        " next_attempt_at = now() + CAST(:hold AS interval)"
        " WHERE id = (SELECT d.id FROM webhook_deliveries d JOIN webhooks h ON h.id = d.hook_id"
        "  WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND h.enabled"
        "  ORDER BY d.next_attempt_at LIMIT 1 FOR UPDATE OF d SKIP LOCKED)"
        " RETURNING id"), {"hold": f"{hold.total_seconds()} seconds"}).first()
    db.session.commit()
    return db.session.get(WebhookDelivery, row[0]) if row else None


def send(delivery: WebhookDelivery, config: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """One try: ``(status code, error)``; delivered when the code is 2xx."""
    hook = db.session.get(Webhook, delivery.hook_id)
    body = json.dumps(payload(delivery, hook, config), separators=(",", ":")).encode()
    url, key = hook.url, str(delivery.id)
    headers = {"Content-Type": "application/json", "User-Agent": "trainq-webhooks/1",
               EVENT_HEADER: delivery.event, DELIVERY_HEADER: key, "Idempotency-Key": key,
               SIGNATURE_HEADER: sign(hook.secret, body)}
    db.session.rollback()  # no transaction open across the network
    try:
        answer = webhook_net.post(url, body, headers, allow_private=bool(config["WEBHOOK_ALLOW_PRIVATE"]),
                                  timeout=float(config["WEBHOOK_TIMEOUT"]))
    except webhook_net.UnsafeUrl as exc:
        return None, f"refused: {exc}"
    except webhook_net.DeliveryError as exc:
        return None, str(exc)
    if 200 <= answer.status < 300:
        return answer.status, None
    excerpt = answer.body[:300].decode("utf-8", "replace")
    return answer.status, f"HTTP {answer.status}" + (f": {excerpt}" if excerpt else "")


def record(delivery_id: uuid.UUID, code: int | None, error: str | None, config: Mapping[str, Any]) -> None:
    """A try's outcome: delivered; or the next try backed off (or failed for good); the hook's failures counted
    and the hook disabled after ``WEBHOOK_DISABLE_AFTER`` in a row."""
    delivery = db.session.get(WebhookDelivery, delivery_id, with_for_update=True)
    hook = db.session.get(Webhook, delivery.hook_id, with_for_update=True)
    now = utcnow()
    delivery.last_status_code, delivery.last_error = code, error
    if error is None:
        delivery.status, delivery.delivered_at = "delivered", now
        hook.consecutive_failures = 0
    else:
        if delivery.attempts >= int(config["WEBHOOK_MAX_ATTEMPTS"]):
            delivery.status = "failed"
        else:
            wait = min(float(config["WEBHOOK_RETRY_BASE"]) * 2 ** (delivery.attempts - 1), MAX_BACKOFF)
            delivery.next_attempt_at = now + timedelta(seconds=wait)
        hook.consecutive_failures += 1
        if hook.enabled and hook.consecutive_failures >= int(config["WEBHOOK_DISABLE_AFTER"]):
            hook.enabled = False
            hook.disabled_reason = (f"disabled after {hook.consecutive_failures} failed tries in a row; the last: "
                                    f"{error}")[:1000]
            log.warning("webhook %s disabled: %s", hook.id, hook.disabled_reason)
        hook.updated_at = now
    db.session.commit()


def deliver_due(config: Mapping[str, Any], limit: int = 50) -> int:
    """Send up to ``limit`` due deliveries, one at a time; how many were tried."""
    tried = 0
    while tried < limit:
        delivery = _claim(config)
        if delivery is None:
            break
        delivery_id = delivery.id
        code, error = send(delivery, config)
        record(delivery_id, code, error, config)
        if error:
            log.info("webhook delivery %s: %s", delivery_id, error)
        tried += 1
    return tried


def run_once(config: Mapping[str, Any]) -> int:
    fan_out()
    return deliver_due(config)


def run(config: Mapping[str, Any], stop: threading.Event | None = None) -> None:
    """Fan out and deliver every ``WEBHOOK_POLL_INTERVAL`` until ``stop`` is set; a database outage is waited out."""
    stop = stop or threading.Event()
    period = float(config["WEBHOOK_POLL_INTERVAL"])
    while not stop.is_set():
        try:
            busy = run_once(config)
        except SQLAlchemyError as exc:
            log.warning("webhook sender: database unreachable (%s); retrying", exc.__class__.__name__)
            db.session.rollback()
            busy = 0
        finally:
            db.session.remove()
        if not busy:
            stop.wait(period)
        elif stop.is_set():
            break
    log.info("webhook sender stopped")


def start_thread(app: Any) -> threading.Event:
    """The sender as a daemon thread of ``app`` (the reconciler's); set the event it returns to stop it."""
    stop = threading.Event()

    def main() -> None:
        with app.app_context():
            run(app.config, stop)

    threading.Thread(target=main, name="webhook-sender", daemon=True).start()
    return stop
