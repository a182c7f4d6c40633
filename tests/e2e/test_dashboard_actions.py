"""Every action rq-dashboard offers, on every list it shows, through its own routes (POST with the admin's bearer
token, as its pages post with the session and CSRF token): the row ends telling the truth, what the admin meant
is honoured, and nothing comes back by itself. And a deletion made in Redis by hand is told apart from Redis
losing its data: the first is never re-enqueued, the second always is."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from api.queue import enqueued_key, fetch
from api.record.status import utcnow
from api.service import users
from api.service.reconcile import DELETED_IN_RQ, run_pass
from tests.support import SHORT, events, process_gone, row, submit, wait_for, wait_status, wait_training

SAMPLE = {"TRAINQ_TASKS": "tests.task_modules.sample"}
LOOP = {"steps": 10**6, "sleep": 0.01, "checkpoint": False}


def submit_task(client, task: str, params: dict) -> str:
    response = client.post("/api/training", json={"task": task, "params": params, "name": task})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]["id"]


def rq_status(rq_id: str) -> str | None:
    try:
        return fetch(rq_id).get_status(refresh=True)
    except NoSuchJobError:
        return None


def origin(job_id: str) -> str:
    """The queue its RQ job was enqueued on: the queue of the host it was placed on."""
    return fetch(job_id).origin


@pytest.fixture(autouse=True)
def _placeholder(placeholder_host: str) -> None:
    """Jobs no worker of the test takes wait in RQ on the placeholder host's queue (tests/conftest.py)."""


def in_rq(job_id: str, status: str) -> str:
    wait_for(lambda: rq_status(job_id) == status, 30, f"RQ to list {job_id} {status}")
    return job_id


def moved_by_hand(redis, job_id: str, registry: type, status: str) -> str:
    """A queued row's RQ job moved out of its queue into ``registry``, as a Redis client could (the service itself
    never defers nor schedules a job; rq-dashboard still shows and empties those lists)."""
    queue = origin(job_id)
    redis.lrem(f"rq:queue:{queue}", 0, job_id)
    redis.hset(f"rq:job:{job_id}", "status", status)
    redis.zadd(registry(queue, connection=redis).key, {job_id: 9_999_999_999})
    return job_id


def _cancelled(client) -> str:
    job_id = submit(client, SHORT)
    assert client.delete(f"/api/training/{job_id}").status_code == 200
    return job_id


def _training(client) -> str:
    job_id = submit_task(client, "test-loop", LOOP)
    wait_training(job_id)
    return in_rq(job_id, "started")


def _ended(client, task: str, status: str, rq: str) -> str:
    job_id = submit_task(client, task, {})
    wait_status(job_id, status)
    return in_rq(job_id, rq)


def setups(client, redis) -> dict[str, tuple[Callable[[], str], bool]]:
    """registry -> (a factory of one row whose current RQ job sits in it, whether that row is active); the list is
    its RQ job's queue's (the queue of the host it was placed on)."""
    return {
        "queued": (lambda: in_rq(submit(client, SHORT), "queued"), True),
        "started": (lambda: _training(client), True),
        "deferred": (lambda: moved_by_hand(redis, submit(client, SHORT), DeferredJobRegistry, "deferred"), True),
        "scheduled": (lambda: moved_by_hand(redis, submit(client, SHORT), ScheduledJobRegistry, "scheduled"), True),
        "failed": (lambda: _ended(client, "test-raise", "failed", "failed"), False),
        "finished": (lambda: _ended(client, "test-strict", "completed", "finished"), False),
        "canceled": (lambda: in_rq(_cancelled(client), "canceled"), False),
    }


def nothing_comes_back(*job_ids: str) -> None:
    """A reconciler pass past every grace acts on none of them, and RQ holds none of their attempts."""
    report = run_pass(now=utcnow() + timedelta(minutes=5))
    acted = {job_id for ids in report.actions.values() for job_id in ids}
    assert not acted & set(job_ids), report.to_dict()
    for job_id in job_ids:
        assert rq_status(row(job_id).rq_job_id) is None, job_id


@pytest.mark.parametrize("registry", ["queued", "started", "failed", "finished", "canceled", "deferred",
                                      "scheduled"])
def test_delete_and_empty_on_every_list_rq_dashboard_shows(registry, client, workers, redis):
    """Delete (a job's row in the list, or its page) and empty (the whole list): an active row ends cancelled,
    saying so and who, a running one's training stops; a row already ended stays as it is (only RQ's record of it
    goes). Neither comes back."""
    if registry in ("started", "failed", "finished"):
        workers(**SAMPLE)
    make, active = setups(client, redis)[registry]
    admin = users.first_admin().name
    for action, url, what in (("delete", "/rq/job/{}/delete", "deleted"),
                              ("empty", "/rq/queue/{}/" + registry + "/empty", f"deleted ({registry} jobs emptied)")):
        if registry == "queued" and action == "empty":
            what = "deleted (queue emptied)"
        job_id = make()
        url = url.format(job_id if action == "delete" else origin(job_id))
        before, evs = row(job_id), events(job_id)
        response = client.post(url)
        assert response.status_code == 200 and response.get_json()["status"] == "OK", (action, response.get_json())
        job = row(job_id)
        if active:
            assert job.status == "cancelled" and job.status_reason == f"{what} in rq-dashboard by {admin}", action
            assert events(job_id)[-1] == (before.status, "cancelled", "dashboard-sync")
            event = client.get(f"/api/training/{job_id}/events").get_json()["events"][-1]
            assert event["user"] == admin and event["reason"] == job.status_reason
            last = client.get(f"/api/training/{job_id}/logs").get_json()["lines"][-1]["line"]
            assert last.endswith(f"cancelled by {admin} (dashboard-sync): {job.status_reason}"
                                 + ("; its training was stopped" if registry == "started" else "")), last
            if registry == "started":
                wait_for(lambda p=before.worker_pid: process_gone(p), 30, "the deleted job's training to stop")
        else:  # it had ended: RQ's record of it goes, the row's truth stays
            assert (job.status, job.status_reason, events(job_id)) == (before.status, before.status_reason, evs)
        nothing_comes_back(job_id)
        assert row(job_id).status == job.status


def test_requeue_of_a_job_rq_would_refuse_changes_nothing_and_says_why(client):
    """rq-dashboard shows Requeue on failed jobs only; a POST for any other is a 409 that says why, not RQ's 500."""
    job_id = in_rq(submit(client, SHORT), "queued")
    response = client.post(f"/rq/job/{job_id}/requeue")
    assert response.status_code == 409
    assert "is queued, not failed: only a failed job can be requeued" in response.get_json()["error"]["message"]
    assert (row(job_id).status, rq_status(job_id), len(events(job_id))) == ("queued", "queued", 1)
    assert client.post("/rq/job/no-such-job/requeue").status_code == 409


def test_a_job_cancelled_while_training_and_requeued_in_rq_dashboard_resumes_from_its_checkpoint(client, workers):
    """RQ keeps a stopped job in its failed list, where rq-dashboard offers Requeue: the admin means run it again,
    so the cancelled row restarts on a new attempt from its newest checkpoint, and trains."""
    worker = workers(**SAMPLE)
    job_id = submit_task(client, "test-loop", {**LOOP, "checkpoint": True})
    wait_for(lambda: row(job_id).step >= 5 and row(job_id).checkpoint_path, 60, "a few checkpoints")
    assert client.delete(f"/api/training/{job_id}").status_code == 200
    in_rq(job_id, "stopped")
    assert client.post(f"/rq/job/{job_id}/requeue").status_code == 200
    admin = users.first_admin().name
    job = wait_training(job_id)
    assert job.attempts == 2 and job.rq_job_id == f"{job_id}-attempt-2"
    restarted = [e for e in client.get(f"/api/training/{job_id}/events").get_json()["events"]
                 if e["reason"].startswith(f"requeued in rq-dashboard by {admin} (from ")]
    assert len(restarted) == 1 and restarted[0]["user"] == admin and restarted[0]["to_status"] == "queued", restarted
    started = wait_for(lambda: re.search(r"starting at step (\d+) \(attempt 2\)", worker.log()), 30,
                       "attempt 2 to log its start")
    assert int(started.group(1)) >= 5  # it resumed from its checkpoint, it did not start afresh
    assert client.delete(f"/api/training/{job_id}").status_code == 200


def test_requeue_all_and_compact_with_nothing_to_do_answer_ok_and_change_no_row(client, redis):
    queued = in_rq(submit(client, SHORT), "queued")
    gone = in_rq(submit(client, SHORT), "queued")
    redis.delete(f"rq:job:{gone}")  # a hole in the queue's list, which compact removes
    queue = origin(queued)
    for url in (f"/rq/requeue/{queue}", f"/rq/queue/{queue}/compact", "/rq/queue/training.none/compact",
                "/rq/requeue/training.none"):
        response = client.post(url)
        assert response.status_code == 200 and response.get_json()["status"] == "OK", url
    assert Queue(queue, connection=redis).get_job_ids() == [queued]
    assert (row(queued).status, rq_status(queued), len(events(queued))) == ("queued", "queued", 1)


# ---------------------------------------------------------------- deleted on purpose, or lost by Redis


def test_a_deletion_in_redis_is_never_brought_back_but_a_flush_always_is(client, workers, redis):
    """Each enqueue writes a marker key in the same transaction as the RQ job. RQ's deletions (rq-dashboard, the
    rq command, ``Job.delete()``) remove the job and leave the marker: the row ends cancelled. A flush (or a
    restart without persistence) removes both: the row is re-enqueued, as before."""
    deleted, emptied, lost = (in_rq(submit(client, SHORT), "queued") for _ in range(3))
    Job.fetch(deleted, connection=redis, serializer=JSONSerializer).delete()  # a client, not the dashboard
    report = run_pass(now=utcnow() + timedelta(minutes=5))
    assert report.actions == {"deleted": [deleted]}
    job = row(deleted)
    assert (job.status, job.status_reason, events(deleted)[-1]) == \
        ("cancelled", DELETED_IN_RQ, ("queued", "cancelled", "dashboard-sync"))

    redis.flushdb()  # Redis loses everything: both remaining jobs and their markers
    report = run_pass(now=utcnow() + timedelta(minutes=5))
    assert sorted(report.actions["requeued"]) == sorted([emptied, lost]) and "deleted" not in report.actions
    for job_id in (emptied, lost):
        assert (row(job_id).status, rq_status(job_id)) == ("queued", "queued")
        assert redis.exists(enqueued_key(job_id))  # re-enqueued with its marker: a deletion is told apart again
    assert row(deleted).status == "cancelled" and rq_status(deleted) is None

    Queue(origin(emptied), connection=redis, serializer=JSONSerializer).empty()  # as `rq empty <queue>` does
    report = run_pass(now=utcnow() + timedelta(minutes=5))
    assert sorted(report.actions["deleted"]) == sorted([emptied, lost]) and "requeued" not in report.actions
    nothing_comes_back(deleted, emptied, lost)

    # a running attempt deleted by hand: cancelled, and its training stops by itself (its row refuses its writes)
    workers(**SAMPLE)
    running = submit_task(client, "test-loop", LOOP)
    pid = wait_training(running).worker_pid
    Job.fetch(running, connection=redis, serializer=JSONSerializer).delete()
    report = run_pass()
    assert report.actions == {"deleted": [running]} and row(running).status == "cancelled"
    wait_for(lambda: process_gone(pid), 30, "the deleted attempt's training to stop")


def test_a_requeue_the_service_refuses_changes_nothing_and_says_why(client, workers, make_user):
    """Requeue in rq-dashboard restarts the row itself (RQ's own requeue would only run the old attempt for the
    row to refuse): when the restart is refused, here by the owner's limit of queued jobs, nothing changes (not
    in RQ, not on the row) and the answer names the reason; requeue-all lists it among the refused."""
    workers(**SAMPLE)
    _, owner, _ = make_user("capped", max_queued_jobs=1)
    failing = submit_task(owner, "test-raise", {})
    wait_status(failing, "failed")
    wait_for(lambda: rq_status(failing) == "failed", 30, "RQ to list it failed")
    # the worker's one slot taken (by someone else's job), the owner's mlp job waits: its one queued job (without
    # the blocker it would start at once, and the limit would have nothing to count)
    blocker = submit_task(client, "test-loop", LOOP)
    wait_status(blocker, "running")
    waiting = submit(owner, SHORT)
    before = (row(failing).status, row(failing).attempts, len(events(failing)))
    response = client.post(f"/rq/job/{failing}/requeue")
    assert response.status_code == 429, response.get_json()
    assert "not requeued" in response.get_json()["error"]["message"]
    assert "max_queued_jobs=1" in response.get_json()["error"]["message"]
    every = client.post(f"/rq/requeue/{origin(failing)}")
    assert every.status_code == 200 and every.get_json()["restarted"] == []
    assert "max_queued_jobs=1" in every.get_json()["refused"][failing]
    assert (row(failing).status, row(failing).attempts, len(events(failing))) == before
    assert rq_status(failing) == "failed"
    assert row(waiting).status == "queued"  # what the limit counted, still there
    assert client.delete(f"/api/training/{blocker}").status_code == 200
