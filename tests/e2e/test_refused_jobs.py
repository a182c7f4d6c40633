"""A worker runs only the service's own job function: anything else put into its queue, even by a client
that knows the Redis password, is refused, logged, and never run (nor its payload unpickled)."""

from __future__ import annotations

import json
import pickle
import zlib
from datetime import timedelta

from rq import Callback, Queue
from rq.serializers import JSONSerializer

from api.queue import JOB_FUNCTION, fetch, host_queue_name
from tests.support import SHORT, process_gone, submit, wait_for, wait_status


class Planted:
    """Unpickling this runs ``touch <path>``: a pickle payload is code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def refused(redis, rq_id: str) -> str:
    def failed() -> str | None:
        job = fetch(rq_id, redis)
        if job.get_status(refresh=True) != "failed":
            return None
        return job.latest_result().exc_string

    return wait_for(failed, 30, f"RQ job {rq_id} to be refused")


def test_jobs_naming_anything_else_are_refused_unrun(client, workers, redis, settings, tmp_path):
    worker = workers()
    queue = Queue(host_queue_name(worker.name), connection=redis, serializer=JSONSerializer)  # what it dequeues
    ran = tmp_path / "ran"

    by_hand = queue.enqueue("os.system", f"touch {ran}-by-hand")
    with_callback = queue.enqueue_call(JOB_FUNCTION, args=("0" * 32, 1), on_failure=Callback("os.system"))
    pickled = queue.enqueue_call(JOB_FUNCTION, args=("0" * 32, 1))
    redis.hset(f"rq:job:{pickled.id}", "data", zlib.compress(pickle.dumps(Planted(f"{ran}-unpickled"))))
    no_args = queue.enqueue_call(JOB_FUNCTION, args=())
    glob_args = queue.enqueue_call(JOB_FUNCTION, args=("*", 1))  # would name every job's scratch folders

    assert "it names 'os.system'; only api.worker.run_training_job runs here" in refused(redis, by_hand.id)
    assert "it names callbacks ['os.system']" in refused(redis, with_callback.id)
    assert "its payload is not JSON" in refused(redis, pickled.id)
    for bad in (no_args, glob_args):
        assert "are not (job id, attempt)" in refused(redis, bad.id)
    log = worker.log()
    for rq_job in (by_hand, with_callback, pickled, no_args, glob_args):
        assert f"refused RQ job {rq_job.id}, not run" in log, log
    assert "running (attempt" not in log  # our job function never started for any of them
    assert not list(tmp_path.glob("ran*"))

    # the worker is still there and still runs the service's own jobs
    job_id = submit(client, SHORT)
    wait_status(job_id, "completed")
    assert worker.process.poll() is None


def plant(redis, job_id: str, **fields) -> None:
    """A job hash written straight into Redis, as anyone with the password could."""
    data = zlib.compress(json.dumps([JOB_FUNCTION, None, ["0" * 32, 1], {}]).encode())
    redis.hset(f"rq:job:{job_id}", mapping={"data": data, "status": "started", "origin": "training.mlp",
                                            "created_at": "2026-01-01T00:00:00.000000Z", **fields})


def test_rq_dashboard_never_unpickles_what_is_in_redis(client, redis, tmp_path):
    ran = tmp_path / "ran"
    plant(redis, "evil-meta", meta=pickle.dumps(Planted(f"{ran}-meta")), status="failed")
    redis.zadd("rq:failed:training.mlp", {"evil-meta": 9_999_999_999})
    for url in ("/rq/0/view/job/evil-meta", "/rq/job/evil-meta/requeue", "/rq/job/evil-meta/delete"):
        client.get(url)
        client.post(url)
    # a worker whose current job is a pickle: its workers list reads that job (RQ's default serializer: pickle)
    redis.hset("rq:job:evil-current", mapping={"data": zlib.compress(pickle.dumps(Planted(f"{ran}-current"))),
                                               "status": "started", "origin": "training.mlp",
                                               "created_at": "2026-01-01T00:00:00.000000Z"})
    redis.hset("rq:worker:planted", mapping={"name": "planted", "queues": "training.mlp", "state": "busy",
                                             "current_job": "evil-current", "pid": "1",
                                             "birth": "2026-01-01T00:00:00.000000Z",
                                             "last_heartbeat": "2026-01-01T00:00:00.000000Z"})
    redis.sadd("rq:workers", "rq:worker:planted")
    try:
        for url in ("/rq/0/data/workers.json", "/rq/0/view/workers", "/rq/0/data/queues.json"):
            assert client.get(url).status_code < 500, url
    finally:
        redis.srem("rq:workers", "rq:worker:planted")
        redis.delete("rq:worker:planted", "rq:job:evil-current")
    assert not list(tmp_path.glob("ran*"))


def test_callbacks_in_rqs_registries_are_never_called(client, workers, redis):
    # an expired entry in a task queue's started registry, naming a failure callback: RQ's clean-up of the
    # registry (at worker start, and on a count) would import and call it with (job, connection, *exc_info)
    plant(redis, "evil-callback", failure_callback_name="logging.warning")
    wip = f"rq:wip:{host_queue_name('callbacks-host')}"  # the queue of the worker about to start
    redis.zadd(wip, {"evil-callback": 1})
    worker = workers("callbacks-host")
    assert client.get("/api/training/health").status_code == 200
    wait_for(lambda: not redis.zscore(wip, "evil-callback"), 30, "the registry clean-up")
    log = worker.log()
    assert "cleanup: evil-callback Moved to FailedJobRegistry" in log  # RQ cleaned it up, and called nothing:
    assert "evil-callback', enqueued_at" not in log  # logging.warning(job, ...) would show the job


def test_a_job_deleted_in_rq_dashboard_ends_cancelled_and_never_comes_back(client, workers, redis, placeholder_host):
    """Deleting a queued job (or emptying its queue) in rq-dashboard is a deliberate removal, not Redis losing
    it: the row ends cancelled, saying so, and the reconciler does not re-enqueue it; a running one stops."""
    from api.record.status import utcnow
    from api.service import users
    from api.service.reconcile import run_pass
    from tests.support import LONG, events, row, wait_training

    one, two, three = (submit(client, SHORT) for _ in range(3))  # on a host whose worker never takes them: queued
    assert client.post(f"/rq/job/{one}/delete").status_code == 200
    assert client.post(f"/rq/queue/{fetch(two).origin}/queued/empty").status_code == 200
    admin = users.first_admin().name
    for job_id, what in ((one, "deleted"), (two, "deleted (queue emptied)"), (three, "deleted (queue emptied)")):
        job = row(job_id)
        assert job.status == "cancelled" and job.status_reason == f"{what} in rq-dashboard by {admin}", job_id
        assert events(job_id)[-1] == ("queued", "cancelled", "dashboard-sync")
    report = run_pass(now=utcnow() + timedelta(minutes=5))  # past the enqueue grace
    assert report.actions == {}  # nothing to bring back

    workers()
    running = submit(client, LONG)
    job = wait_training(running)
    assert client.post(f"/rq/job/{running}/delete").status_code == 200
    assert row(running).status == "cancelled"
    wait_for(lambda: process_gone(job.worker_pid), 30, "the deleted job's training to stop")


def test_a_failed_job_requeued_in_rq_dashboard_runs_again_as_a_new_attempt(client, workers):
    """RQ's requeue would run the old attempt, which the worker refuses (the row is failed): what the admin meant
    is run it again, so the row restarts on a new attempt. Requeue-all does it for every failed job of a queue;
    compact changes no job."""
    from api.service import users
    from tests.support import events, row

    workers(TRAINQ_TASKS="tests.task_modules.sample")

    def failed_job() -> str:
        response = client.post("/api/training", json={"task": "test-raise", "params": {}, "name": "raises"})
        job_id = response.get_json()["job"]["id"]
        wait_status(job_id, "failed")
        wait_for(lambda: fetch(job_id).get_status(refresh=True) == "failed", 30, "RQ to list it failed")
        return job_id

    one = failed_job()
    assert client.post(f"/rq/job/{one}/requeue").status_code == 200
    admin = users.first_admin().name
    wait_for(lambda: row(one).attempts == 2 and row(one).status == "failed", 60, "the second attempt to raise")
    assert ("failed", "queued", "api") in events(one)
    assert any(e["reason"] == f"requeued in rq-dashboard by {admin} (afresh)" and e["user"] == admin
               for e in client.get(f"/api/training/{one}/events").get_json()["events"])

    two, three = failed_job(), failed_job()
    queue = fetch(two).origin  # the worker's host's queue
    assert client.post(f"/rq/requeue/{queue}").status_code == 200  # every failed one: one's 2nd too
    for job_id, attempts in ((one, 3), (two, 2), (three, 2)):
        wait_for(lambda j=job_id, n=attempts: row(j).attempts == n and row(j).status == "failed", 60,
                 f"attempt {attempts} to run")
    assert client.post(f"/rq/queue/{queue}/compact").status_code == 200
    assert [row(j).attempts for j in (one, two, three)] == [3, 2, 2]
