"""Sweeps end to end: real workers run the trials, a real reconciler drives the sweep (Optuna's study in the same
PostgreSQL). A sweep finishes with its best trial; a pruned trial stops at its report and reads as pruned; a stopped
sweep cancels its running trials and starts none; a driver killed mid-sweep loses and doubles no trial; failing
trials are recorded and, when the first ones all fail, stop the sweep saying why. A sweep's end reaches the hooks
that asked for sweep_finished once, signed, sent by the reconciler's webhook sender."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text

from api.record.tables import TrainingJob
from api.record.webhook_tables import WebhookDelivery, WebhookOutbox
from api.service import sweep_driver
from api.stores import db
from tests.support import events, process_gone, wait_for
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e

SAMPLE = {"TRAINQ_TASKS": "tests.task_modules.sample"}
X = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def start(client, workers, reconcilers, slots: int = 1, **env: str) -> None:
    workers(**SAMPLE, TRAINQ_SLOTS=str(slots), **env)
    reconcilers(**SAMPLE, **env)
    wait_for(lambda: any(t["name"] == "test-sweep" and t["workers"]
                         for t in client.get("/api/tasks").get_json()["tasks"]), 60, "the worker to offer test-sweep")


def sweep(client, **body) -> dict:
    response = client.post("/api/sweeps", json={"task": "test-sweep", "space": X, "sampler": "random", "seed": 3,
                                                **body})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["sweep"]


def read(client, sweep_id: str) -> dict:
    return client.get(f"/api/sweeps/{sweep_id}").get_json()


def ended(client, sweep_id: str, state: str, timeout: float = 120) -> dict:
    return wait_for(lambda: (s := read(client, sweep_id))["state"] == state and s, timeout,
                    f"sweep {sweep_id} to be {state}")


def trial_rows(sweep_id: str) -> list[TrainingJob]:
    db.session.expire_all()
    rows = list(db.session.scalars(select(TrainingJob).where(TrainingJob.sweep_id == uuid.UUID(sweep_id))
                                   .order_by(TrainingJob.trial_number)))
    db.session.commit()
    return rows


def test_a_sweep_runs_its_trials_two_at_a_time_to_a_best_trial(client, workers, reconcilers):
    start(client, workers, reconcilers, slots=2)
    created = sweep(client, max_trials=6, parallel=2, params={"epochs": 3, "sleep": 0.1})
    done = ended(client, created["id"], "completed")
    trials = done["trials"]
    assert [t["number"] for t in trials] == list(range(6)) and {t["status"] for t in trials} == {"completed"}
    assert done["stop_reason"] == "all 6 trials ended" and done["trial_counts"] == {"completed": 6}
    best = min(trials, key=lambda t: t["objective"])
    assert done["best"]["number"] == best["number"]
    assert done["best"]["objective"] == pytest.approx((best["params"]["x"] - 0.3) ** 2 + 1 / 3)
    rows = trial_rows(created["id"])
    assert len({r.params["x"] for r in rows}) == 6  # six different draws
    for r in rows:  # never more than `parallel` trials running at once
        overlapping = [o for o in rows if o.started_at < r.finished_at and r.started_at < o.finished_at]
        assert len(overlapping) <= 2, [(o.trial_number, o.started_at, o.finished_at) for o in overlapping]


def test_a_pruned_trial_stops_at_its_report_and_reads_as_pruned(client, workers, reconcilers):
    """ASHA: a trial not the best so far at epoch 1 (its first rung) is pruned there."""
    start(client, workers, reconcilers)
    created = sweep(client, max_trials=5, parallel=1, pruner="asha", params={"epochs": 20, "sleep": 0.2})
    done = ended(client, created["id"], "completed", timeout=180)
    pruned = [t for t in done["trials"] if t["status"] == "pruned"]
    assert pruned, done["trials"]
    for trial in pruned:
        assert trial["pruned_at"] == 1 and trial["epoch"] <= 2  # stopped within one report of the verdict
        assert trial["status_reason"].startswith("pruned at epoch 1 (loss "), trial["status_reason"]
        assert "not among the best 1/3" in trial["status_reason"]
        assert events(trial["job_id"])[-1] == ("running", "pruned", "worker")
    assert done["trials"][0]["status"] == "completed"  # the first to reach a rung is always promoted
    assert done["best"]["status"] == "completed"


def test_stopping_a_sweep_cancels_its_running_trials_and_starts_none(client, workers, reconcilers):
    start(client, workers, reconcilers, slots=2)
    created = sweep(client, max_trials=10, parallel=2, params={"epochs": 100_000, "sleep": 0.05})
    rows = wait_for(lambda: len(r := [j for j in trial_rows(created["id"]) if j.status == "running" and j.epoch > 0])
                    == 2 and r, 90, "two trials training")
    stopped = client.delete(f"/api/sweeps/{created['id']}")
    assert stopped.status_code == 200, stopped.get_json()
    body = stopped.get_json()["sweep"]
    assert body["state"] == "stopped" and [t["status"] for t in body["trials"]] == ["cancelled", "cancelled"]
    for job in rows:
        wait_for(lambda job=job: process_gone(job.worker_pid), 10, f"trial {job.trial_number}'s horse to stop")
    sweep_driver.advance(rows[0].sweep_id)  # a step after the stop (as the reconciler's next wake-up) starts nothing
    assert len(trial_rows(created["id"])) == 2


def test_a_driver_killed_mid_sweep_loses_and_doubles_no_trial(client, workers, reconcilers):
    workers(**SAMPLE)
    first = reconcilers(**SAMPLE)
    wait_for(lambda: any(t["name"] == "test-sweep" and t["workers"]
                         for t in client.get("/api/tasks").get_json()["tasks"]), 60, "the worker to offer test-sweep")
    created = sweep(client, max_trials=4, parallel=1, params={"epochs": 4, "sleep": 0.2})
    wait_for(lambda: len(trial_rows(created["id"])) >= 2, 90, "the driver to start trial 1")
    first.kill()  # the driver goes mid-sweep (SIGKILL: nothing tidied)
    reconcilers(**SAMPLE)  # another takes over from PostgreSQL's state
    done = ended(client, created["id"], "completed", timeout=180)
    assert [t["number"] for t in done["trials"]] == [0, 1, 2, 3]
    assert {t["status"] for t in done["trials"]} == {"completed"}
    assert len({r.params["x"] for r in trial_rows(created["id"])}) == 4


def test_failing_trials_are_recorded_and_the_sweep_goes_on(client, workers, reconcilers):
    start(client, workers, reconcilers)
    space = {"x": {"type": "choice", "choices": [0.1, 0.9, 0.2, 0.8]}}
    created = sweep(client, space=space, sampler="grid", max_trials=10, params={"epochs": 2, "fail_above": 0.5})
    done = ended(client, created["id"], "completed")
    assert done["max_trials"] == 4  # the grid's size
    statuses = {t["params"]["x"]: t["status"] for t in done["trials"]}
    assert statuses == {0.1: "completed", 0.2: "completed", 0.8: "failed", 0.9: "failed"}
    assert done["best"]["params"] == {"x": 0.2}
    failed = next(t for t in done["trials"] if t["status"] == "failed")
    assert "ValueError: x 0.8" in failed["status_reason"] or "ValueError: x 0.9" in failed["status_reason"]


def test_a_sweep_whose_first_trials_all_fail_stops_saying_why(client, workers, reconcilers):
    start(client, workers, reconcilers)
    created = sweep(client, max_trials=10, parallel=1, params={"fail_above": -1})
    done = ended(client, created["id"], "failed")
    assert [t["status"] for t in done["trials"]] == ["failed"] * 3
    assert done["stop_reason"].startswith("the first 3 trials all failed (trial 2: ValueError: x ")


def test_a_sweeps_end_is_delivered_once_signed_to_the_hooks_that_asked(client, workers, reconcilers, make_user, ctx,
                                                                       monkeypatch):
    """Two quick trials on real workers; the reconciler's driver ends the sweep and its sender thread delivers one
    signed sweep_finished to the hook that asked, none to a hook for job events only or to another user's hook."""
    monkeypatch.setitem(ctx.config, "WEBHOOK_ALLOW_PRIVATE", True)  # the receiver is on 127.0.0.1
    db.session.execute(text("TRUNCATE webhooks, webhook_outbox CASCADE"))
    db.session.commit()
    asked, jobs_only = Receiver().start(), Receiver().start()
    try:
        def hook(user_client, receiver: Receiver, events: list[str]) -> int:
            response = user_client.post("/api/webhooks", json={"url": receiver.url, "events": events})
            assert response.status_code == 201, response.get_json()
            receiver.secret = response.get_json()["secret"]
            return response.get_json()["webhook"]["id"]

        asked_id = hook(client, asked, ["sweep_finished"])
        hook(client, jobs_only, ["completed", "failed", "cancelled"])
        _, bob_client, _ = make_user("bob")  # bob's hook hears bob's sweeps, not the admin's
        bob = bob_client.post("/api/webhooks", json={"url": asked.url, "events": ["sweep_finished"]})
        assert bob.status_code == 201, bob.get_json()
        bob_id = bob.get_json()["webhook"]["id"]
        start(client, workers, reconcilers, slots=2, WEBHOOK_ALLOW_PRIVATE="1", WEBHOOK_POLL_INTERVAL="0.2")
        created = sweep(client, max_trials=2, parallel=2, params={"epochs": 1, "sleep": 0})
        done = ended(client, created["id"], "completed")
        wait_for(lambda: asked.received, 60, "the sweep_finished delivery")
        wait_for(lambda: len(jobs_only.received) == 2, 60, "the two trials' completed deliveries")
        got = asked.received[0]
        assert got.verified, got.error
        body = got.json
        assert body["event"] == "sweep_finished" and got.headers["X-Trainq-Event"] == "sweep_finished"
        summary = body["sweep"]
        assert (summary["id"], summary["state"], summary["trials"], summary["trial_counts"]) == (
            created["id"], "completed", 2, {"completed": 2})
        assert summary["best"]["number"] == done["best"]["number"]
        assert summary["best"]["objective"] == pytest.approx(done["best"]["objective"])
        assert summary["best"]["params"] == done["best"]["params"]
        assert summary["url"].endswith(f"/sweeps/{created['id']}")
        assert {r.json["event"] for r in jobs_only.received} == {"completed"}
        assert all(r.verified and "sweep" not in r.json for r in jobs_only.received)
        db.session.expire_all()
        outbox = list(db.session.scalars(select(WebhookOutbox).where(WebhookOutbox.sweep_id == uuid.UUID(
            created["id"]))))
        assert [(r.event, r.fanned_out_at is not None) for r in outbox] == [("sweep_finished", True)]

        def heard() -> list[tuple[int, str]]:  # the sender records "delivered" after the receiver's answer
            db.session.expire_all()
            found = [(d.hook_id, d.status) for d in db.session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.outbox_id == outbox[0].id))]
            db.session.commit()
            return found

        wait_for(lambda: heard() == [(asked_id, "delivered")], 60, "the delivery recorded as delivered")
        assert bob_id not in dict(heard())
        assert len(asked.received) == 1  # once
    finally:
        asked.stop()
        jobs_only.stop()
