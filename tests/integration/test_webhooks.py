"""Webhooks against a real HTTP receiver on 127.0.0.1 that verifies every signature: registration and its owner
and admin rules, a signed delivery per transition from the status writer's commit, retries with backoff, a hook
disabled after failing, "send again", the Slack format, the SSRF refusals (with WEBHOOK_ALLOW_PRIVATE off), and a
sender process killed between commit and delivery that delivers after its restart under the same idempotency key."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select, text

from api.record.status import Actor, JobStatus
from api.record.status_writer import create, transition
from api.record.tables import TrainingJob
from api.record.webhook_tables import Webhook, WebhookDelivery, WebhookOutbox
from api.service import sweep_driver, webhook_net, webhook_sender
from api.stores import db
from tests.support import start_flask, wait_for
from tests.webhook_receiver import Receiver


@pytest.fixture
def receiver():
    found = Receiver().start()
    yield found
    if found.hold_next is not None:
        found.hold_next.set()
    found.stop()


@pytest.fixture
def private_ok(ctx, monkeypatch):
    """Deliveries to 127.0.0.1 (the test's receiver): allowed as an admin would, with WEBHOOK_ALLOW_PRIVATE."""
    monkeypatch.setitem(ctx.config, "WEBHOOK_ALLOW_PRIVATE", True)
    monkeypatch.setitem(ctx.config, "WEBHOOK_RETRY_BASE", 0.05)
    db.session.execute(text("TRUNCATE webhooks, webhook_outbox CASCADE"))
    db.session.commit()
    return ctx


def new_job(owner_id: int, task: str = "mlp", name: str = "hooked") -> uuid.UUID:
    job = create(TrainingJob(name=name, task=task, params={"epochs": 1}, owner_id=owner_id, attempts=0,
                             max_attempts=1), actor=Actor.API, reason="test")
    return job.id


def end(job_id: uuid.UUID, to: JobStatus = JobStatus.FAILED) -> None:
    assert transition(job_id, to, reason="it broke", actor=Actor.API).changed


def register(client, url: str, events=("failed", "completed"), **extra) -> dict:
    response = client.post("/api/webhooks", json={"url": url, "events": list(events), **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def admin_id() -> int:
    return db.session.scalar(text("SELECT id FROM users WHERE name = 'admin'"))


def send_all(config) -> None:
    for _ in range(3):
        webhook_sender.run_once(config)


def test_a_transition_is_delivered_once_signed_with_the_job_and_its_link(private_ok, client, receiver):
    created = register(client, receiver.url)
    receiver.secret = created["secret"]
    assert created["secret"].startswith("whsec_")
    assert "secret" not in client.get(f"/api/webhooks/{created['webhook']['id']}").get_json()  # shown once
    job_id = new_job(admin_id())
    end(job_id)
    assert transition(job_id, JobStatus.FAILED, reason="again", actor=Actor.API).changed is False  # no 2nd event
    send_all(private_ok.config)
    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.verified, got.error
    body = got.json
    assert body["event"] == "failed" and body["transition"] == {"from": "queued", "to": "failed",
                                                                 "reason": "it broke", "actor": "api"}
    assert body["job"]["id"] == str(job_id) and body["job"]["url"].endswith(f"/jobs/{job_id}")
    assert got.headers["X-Trainq-Event"] == "failed" and got.headers["Idempotency-Key"] == got.key == body["id"]
    deliveries = client.get(f"/api/webhooks/{created['webhook']['id']}/deliveries").get_json()["deliveries"]
    assert [(d["status"], d["attempts"], d["last_status_code"]) for d in deliveries] == [("delivered", 1, 200)]
    # a tampered body or an old timestamp is refused by the receiver's check
    from trainq.webhooks import SignatureError, verify
    with pytest.raises(SignatureError):
        verify(created["secret"], got.headers["X-Trainq-Signature"], got.body + b" ")
    with pytest.raises(SignatureError):
        verify(created["secret"], got.headers["X-Trainq-Signature"], got.body, now=1e10)


def test_only_the_events_and_jobs_a_hook_asked_for(private_ok, client, receiver, make_user):
    created = register(client, receiver.url, events=["completed"], filter={"task": "mlp"})
    receiver.secret = created["secret"]
    end(new_job(admin_id()))  # failed: not asked for
    end(new_job(admin_id(), task="other"), JobStatus.CANCELLED)
    send_all(private_ok.config)
    assert receiver.received == []
    assert db.session.scalar(select(db.func.count()).select_from(WebhookOutbox)) == 2  # the events were queued


def test_retries_back_off_then_fail_and_the_hook_is_disabled_with_a_reason(private_ok, client, receiver,
                                                                           monkeypatch):
    monkeypatch.setitem(private_ok.config, "WEBHOOK_MAX_ATTEMPTS", 3)
    monkeypatch.setitem(private_ok.config, "WEBHOOK_DISABLE_AFTER", 3)
    created = register(client, receiver.url)
    hook_id = created["webhook"]["id"]
    receiver.secret, receiver.status = created["secret"], 500
    end(new_job(admin_id()))

    def tries() -> int:
        webhook_sender.run_once(private_ok.config)
        db.session.expire_all()
        delivery = db.session.scalar(select(WebhookDelivery))
        return delivery.status == "failed" and delivery.attempts

    assert wait_for(tries, 30, "three failed tries") == 3
    assert len(receiver.received) == 3 and len({r.key for r in receiver.received}) == 1  # one key for all tries
    times = [r.headers["X-Trainq-Signature"] for r in receiver.received]
    assert len(set(times)) >= 1
    hook = client.get(f"/api/webhooks/{hook_id}").get_json()
    assert hook["enabled"] is False and "3 failed tries in a row" in hook["disabled_reason"]
    assert "HTTP 500" in hook["disabled_reason"]
    delivery = client.get(f"/api/webhooks/{hook_id}/deliveries").get_json()["deliveries"][0]
    assert delivery["last_status_code"] == 500 and delivery["last_error"].startswith("HTTP 500")

    again = f"/api/webhooks/{hook_id}/deliveries/{delivery['id']}/send-again"
    assert client.post(again).status_code == 409  # disabled: enable it first
    assert client.patch(f"/api/webhooks/{hook_id}", json={"enabled": True}).get_json()["consecutive_failures"] == 0
    receiver.status = 204
    assert client.post(again).status_code == 202
    send_all(private_ok.config)
    delivery = client.get(f"/api/webhooks/{hook_id}/deliveries").get_json()["deliveries"][0]
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("delivered", 1, 204)
    assert receiver.received[-1].key == delivery["id"] and receiver.acted_on == {delivery["id"]}


def test_slack_format(private_ok, client, receiver):
    created = register(client, receiver.url, format="slack")
    receiver.secret = created["secret"]
    job_id = new_job(admin_id(), name="nightly <run>")
    end(job_id)
    send_all(private_ok.config)
    message = receiver.received[0].json
    assert set(message) == {"text"}
    assert "nightly &lt;run&gt;" in message["text"] and "failed: it broke" in message["text"]
    assert f"/jobs/{job_id}|Open job {str(job_id)[:8]} in trainq>" in message["text"]


def test_owners_manage_their_own_hooks_and_hear_only_their_own_jobs(private_ok, client, receiver, make_user):
    alice, alice_client, _ = make_user("alice")
    bob, bob_client, _ = make_user("bob")
    created = register(alice_client, receiver.url)
    receiver.secret = created["secret"]
    hook_id = created["webhook"]["id"]
    assert created["webhook"]["filter"]["owner"] == alice.name  # a user's hook hears their own jobs
    assert bob_client.get(f"/api/webhooks/{hook_id}").status_code == 404
    assert bob_client.delete(f"/api/webhooks/{hook_id}").status_code == 404
    assert bob_client.get("/api/webhooks").get_json()["webhooks"] == []
    refused = bob_client.post("/api/webhooks", json={"url": receiver.url, "events": ["failed"],
                                                      "filter": {"owner": alice.name}})
    assert refused.status_code == 403
    assert hook_id in [h["id"] for h in client.get("/api/webhooks").get_json()["webhooks"]]  # the admin sees all
    end(new_job(bob.id))
    end(new_job(alice.id))
    send_all(private_ok.config)
    assert [r.json["job"]["owner"] for r in receiver.received] == [alice.name]
    assert client.patch(f"/api/webhooks/{hook_id}", json={"enabled": False}).status_code == 200  # admin manages
    assert alice_client.delete(f"/api/webhooks/{hook_id}").status_code == 200


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "100.64.0.1",
                                     "fc00::1", "::ffff:127.0.0.1", "169.254.169.254", "169.254.1.1", "fe80::1",
                                     "0.0.0.0", "224.0.0.1", "fd00:ec2::254"])
def test_ssrf_addresses_refused(address):
    with pytest.raises(webhook_net.UnsafeUrl):
        webhook_net.check_address(address, allow_private=False)


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "0.0.0.0", "fd00:ec2::254", "100.100.100.200"])
def test_link_local_and_metadata_refused_even_when_private_is_allowed(address):
    with pytest.raises(webhook_net.UnsafeUrl):
        webhook_net.check_address(address, allow_private=True)


def test_registration_refuses_internal_urls(client):
    assert client.application.config["WEBHOOK_ALLOW_PRIVATE"] is False
    for url in ("http://127.0.0.1:5000/api", "http://localhost/", "http://169.254.169.254/latest/meta-data/",
                "http://[::1]/", "http://10.0.0.5/", "http://user:pw@example.com/", "http://[fe80::1%25eth0]/",
                "HTTP://0.0.0.0/", "http://2130706433/"):
        response = client.post("/api/webhooks", json={"url": url, "events": ["failed"]})
        assert response.status_code == 403, (url, response.get_json())
        assert response.get_json()["error"]["field"] == "url" and response.get_json()["error"]["code"] == "url_refused"
    response = client.post("/api/webhooks", json={"url": "ftp://example.com/", "events": ["failed"]})
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "url"


def test_the_address_is_checked_again_at_send_time(private_ok, client, receiver, monkeypatch):
    """Registered while private addresses were allowed (or a name that resolved elsewhere then): refused at send."""
    created = register(client, receiver.url)
    monkeypatch.setitem(private_ok.config, "WEBHOOK_ALLOW_PRIVATE", False)
    end(new_job(admin_id()))
    send_all(private_ok.config)
    assert receiver.received == []
    delivery = db.session.scalar(select(WebhookDelivery).where(WebhookDelivery.hook_id == created["webhook"]["id"]))
    assert delivery.status == "pending" and "refused: 127.0.0.1 is a loopback address" in delivery.last_error


def test_redirects_are_bounded_and_checked(private_ok, receiver):
    """A 307 to the cloud metadata address is refused; a redirect that would drop the POST is not followed."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(307 if self.path == "/metadata" else 302)
            self.send_header("Location", "http://169.254.169.254/latest/" if self.path == "/metadata" else "/x")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(webhook_net.UnsafeUrl, match="metadata"):
            webhook_net.post(f"{base}/metadata", b"{}", {}, allow_private=True, timeout=5)
        with pytest.raises(webhook_net.DeliveryError, match="only 307 and 308"):
            webhook_net.post(f"{base}/other", b"{}", {}, allow_private=True, timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_a_sender_killed_between_commit_and_delivery_delivers_after_restart(private_ok, client, receiver, settings,
                                                                            tmp_path):
    """The transition commits while no sender runs; a sender starts, POSTs, and is SIGKILLed before the answer
    (its outcome never written); a new sender delivers it again with the same idempotency key, and the receiver,
    keeping the keys it acted on, acts once."""
    created = register(client, receiver.url)
    receiver.secret = created["secret"]
    job_id = new_job(admin_id())
    end(job_id)  # committed: the outbox row exists, no sender is running
    assert db.session.scalar(select(WebhookOutbox.event).where(WebhookOutbox.job_id == job_id)) == "failed"
    db.session.rollback()
    env = {**settings, "WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_TIMEOUT": "2", "WEBHOOK_POLL_INTERVAL": "0.2"}
    receiver.hold_next = hold = __import__("threading").Event()
    first = start_flask(env, "sender-1", tmp_path, "webhooks", "send")
    try:
        wait_for(receiver.holding.is_set, 60, "the first sender's POST")
        first.kill()  # mid-delivery: the try was claimed, its outcome never written
    finally:
        first.kill()
        hold.set()
    db.session.expire_all()
    delivery = db.session.scalar(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id))
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    db.session.rollback()
    second = start_flask(env, "sender-2", tmp_path, "webhooks", "send")
    try:
        def delivered():
            db.session.expire_all()
            found = db.session.scalar(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id))
            db.session.rollback()
            return found.status == "delivered" and found

        done = wait_for(delivered, 60, f"delivery after the restart:\n{second.log()}")
    finally:
        second.kill()
    assert done.attempts == 2
    keys = [r.key for r in receiver.received]
    assert keys == [str(done.id), str(done.id)] and all(r.verified for r in receiver.received)
    assert receiver.acted_on == {str(done.id)}  # at least once; once by its key
    assert json.loads(receiver.received[1].body)["job"]["id"] == str(job_id)
    assert db.session.scalar(select(db.func.count()).select_from(Webhook)) == 1


def test_the_monitor_page_lists_hooks_and_their_deliveries(private_ok, client, anon, receiver, make_user):
    created = register(client, receiver.url)
    receiver.secret = created["secret"]
    end(new_job(admin_id()))
    send_all(private_ok.config)
    page = client.get("/webhooks")
    assert page.status_code == 200 and "webhooks.js" in page.get_data(as_text=True)
    initial = page.get_data(as_text=True).split('id="initial">')[1].split("</script>")[0]
    data = json.loads(initial)
    assert [h["url"] for h in data["webhooks"]] == [receiver.url]
    assert data["deliveries"][str(created["webhook"]["id"])][0]["status"] == "delivered"
    assert created["secret"] not in page.get_data(as_text=True)
    _, other, _ = make_user("viewer")
    assert receiver.url not in other.get("/webhooks").get_data(as_text=True)
    shell = anon.get("/webhooks")  # a navigation (no Authorization header): the shell, no data
    html = shell.get_data(as_text=True)
    assert shell.status_code == 200 and 'id="shell-status"' in html and "shell.js" in html
    assert receiver.url not in html and "webhooks.js" not in html and shell.headers["Vary"] == "Authorization"


# --- sweep_finished: a sweep's end, queued by the trigger on sweeps (migration 0015) in the commit that ends it ---

SWEEP_SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True}}


def new_sweep(client, **body) -> dict:
    response = client.post("/api/sweeps", json={"task": "diabetes-regression", "space": SWEEP_SPACE,
                                                "params": {"epochs": 1}, "sampler": "random", "seed": 5,
                                                "max_trials": 2, "parallel": 2, "name": "lr <search>", **body})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["sweep"]


def trial_ids(sweep_id: str) -> list[uuid.UUID]:
    db.session.expire_all()
    found = list(db.session.scalars(select(TrainingJob.id).where(TrainingJob.sweep_id == uuid.UUID(sweep_id))
                                    .order_by(TrainingJob.trial_number)))
    db.session.commit()
    return found


def run_trials(sweep_id: str, values: list[float | None]) -> None:
    """Each trial as a worker would end it: running, then completed with its objective (failed where None)."""
    for job_id, value in zip(trial_ids(sweep_id), values, strict=True):
        assert transition(job_id, JobStatus.RUNNING, reason="started", actor=Actor.WORKER).changed
        if value is None:
            assert transition(job_id, JobStatus.FAILED, reason="ValueError: no", actor=Actor.WORKER).changed
        else:
            assert transition(job_id, JobStatus.COMPLETED, reason="done", actor=Actor.WORKER,
                              fields={"metrics": {"val_mse": value}}).changed


def sweep_rows(sweep_id: str) -> list[WebhookOutbox]:
    rows = list(db.session.scalars(select(WebhookOutbox).where(WebhookOutbox.sweep_id == uuid.UUID(sweep_id))))
    db.session.commit()
    return rows


def test_a_sweep_that_ends_delivers_one_signed_sweep_finished_with_its_summary(private_ok, client, receiver,
                                                                               make_user):
    created = register(client, receiver.url, events=["sweep_finished"])
    receiver.secret = created["secret"]
    others = Receiver().start()
    try:
        others.secret = register(client, others.url, events=["completed", "failed"])["secret"]
        bob, bob_client, _ = make_user("bob")
        others_bob = register(bob_client, others.url, events=["sweep_finished"])  # bob's hook: not bob's sweep
        mlp_only = register(client, others.url, events=["sweep_finished"], filter={"task": "mlp"})
        sweep = new_sweep(client)
        run_trials(sweep["id"], [0.5, 0.25])
        assert sweep_rows(sweep["id"]) == []  # trials ended, the sweep not yet: nothing guessed
        sweep_driver.advance(uuid.UUID(sweep["id"]))  # the driver's step ends it: completed
        sweep_driver.advance(uuid.UUID(sweep["id"]))  # a later step changes nothing and queues nothing
        rows = sweep_rows(sweep["id"])
        assert [(r.event, r.job_id) for r in rows] == [("sweep_finished", None)]
        send_all(private_ok.config)
        assert len(receiver.received) == 1
        got = receiver.received[0]
        assert got.verified, got.error
        assert got.headers["X-Trainq-Event"] == "sweep_finished" and got.key == got.json["id"]
        body = got.json
        assert body["event"] == "sweep_finished" and body["event_id"] == rows[0].id
        assert "job" not in body and "transition" not in body
        summary = body["sweep"]
        trials = trial_ids(sweep["id"])
        assert {k: summary[k] for k in ("id", "name", "task", "owner", "state", "stop_reason", "trials",
                                        "trial_counts", "max_trials")} == {
            "id": sweep["id"], "name": "lr <search>", "task": "diabetes-regression", "owner": "admin",
            "state": "completed", "stop_reason": "all 2 trials ended", "trials": 2, "trial_counts": {"completed": 2},
            "max_trials": 2}
        assert summary["objective"] == {"metric": "val_mse", "mode": "min"}
        assert summary["best"]["number"] == 1 and summary["best"]["objective"] == 0.25
        assert summary["best"]["job_id"] == str(trials[1]) and set(summary["best"]["params"]) == {"lr"}
        assert summary["url"].endswith(f"/sweeps/{sweep['id']}") and summary["finished_at"] == body["occurred_at"]
        # the trials' own ends reached the hook for completed; bob's hook and the mlp-only hook heard nothing
        assert sorted(r.json["job"]["id"] for r in others.received) == sorted(str(t) for t in trials)
        assert {r.json["event"] for r in others.received} == {"completed"} and all(r.verified for r in others.received)
        heard = set(db.session.scalars(select(WebhookDelivery.hook_id).where(WebhookDelivery.outbox_id == rows[0].id)))
        assert heard == {created["webhook"]["id"]}
        assert others_bob["webhook"]["id"] not in heard and mlp_only["webhook"]["id"] not in heard
        listed = client.get(f"/api/webhooks/{created['webhook']['id']}/deliveries").get_json()["deliveries"]
        assert [(d["event"], d["sweep_id"], d["job_id"], d["status"]) for d in listed] == [
            ("sweep_finished", sweep["id"], None, "delivered")]
    finally:
        others.stop()


def test_a_stopped_sweep_fires_once_and_its_owners_hook_hears_it(private_ok, client, receiver, make_user):
    alice, alice_client, _ = make_user("alice")
    created = register(alice_client, receiver.url, events=["sweep_finished"], filter={"task": "diabetes-regression"})
    receiver.secret = created["secret"]
    sweep = new_sweep(alice_client, max_trials=5)
    assert alice_client.delete(f"/api/sweeps/{sweep['id']}").status_code == 200
    assert alice_client.delete(f"/api/sweeps/{sweep['id']}").status_code == 200  # stopped already: no 2nd end
    assert client.delete(f"/api/sweeps/{sweep['id']}").status_code == 200
    assert len(sweep_rows(sweep["id"])) == 1
    send_all(private_ok.config)
    assert len(receiver.received) == 1 and receiver.received[0].verified
    summary = receiver.received[0].json["sweep"]
    assert (summary["state"], summary["owner"], summary["best"]) == ("stopped", alice.name, None)
    assert summary["stop_reason"] == f"stopped by {alice.name}" and summary["trial_counts"] == {"cancelled": 2}


def test_a_failed_sweep_fires_and_the_slack_line_says_how_it_ended(private_ok, client, receiver):
    created = register(client, receiver.url, events=["sweep_finished"], format="slack")
    receiver.secret = created["secret"]
    sweep = new_sweep(client, max_trials=5, parallel=3)
    run_trials(sweep["id"], [None, None, None])
    sweep_driver.advance(uuid.UUID(sweep["id"]))  # the first 3 trials all failed: the sweep fails
    send_all(private_ok.config)
    assert len(receiver.received) == 1 and receiver.received[0].verified
    text_ = receiver.received[0].json["text"]
    lines = text_.split("\n")
    assert lines[0].startswith(":checkered_flag: Sweep *lr &lt;search&gt;* (diabetes-regression, admin) failed: "
                               "the first 3 trials all failed"), text_
    assert lines[1] == "Best: none (no trial completed with its objective)" and lines[2] == "Trials: 3 failed"
    assert lines[3].endswith(f"/sweeps/{sweep['id']}|Open sweep {sweep['id'][:8]} in trainq>")


def test_the_slack_line_of_a_completed_sweep_names_its_best_trial():
    body = {"event": "sweep_finished", "sweep": {
        "id": "0123456789", "name": "lr search", "task": "mlp", "owner": "ann", "state": "completed",
        "stop_reason": "all 3 trials ended", "objective": {"metric": "val_loss", "mode": "min"},
        "best": {"number": 2, "params": {"lr": 0.0123456, "layers": 3}, "objective": 0.123456},
        "trial_counts": {"failed": 1, "completed": 2}, "url": "https://t.example/sweeps/0123456789"}}
    assert webhook_sender.slack(body)["text"].split("\n") == [
        ":checkered_flag: Sweep *lr search* (mlp, ann) completed: all 3 trials ended",
        "Best: trial #2 val_loss=0.1235 (lr=0.01235, layers=3)", "Trials: 2 completed, 1 failed",
        "<https://t.example/sweeps/0123456789|Open sweep 01234567 in trainq>"]
