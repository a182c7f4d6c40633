"""Jobs an older trainq left in RQ still run (issue 20, item 9): before the scheduler, a job was enqueued on its
task's queue (``<prefix>.<task>``), naming ``api.worker.run_training_job``, with no reservation. Today's workers
listen only on their host's queue, so once the scheduler places such a job, ``ensure_enqueued`` moves it there
(otherwise it would wait forever on a queue no worker reads)."""

from __future__ import annotations

from rq import Queue

from api.queue import JOB_FUNCTION, SERIALIZER, enqueued_key, fetch, host_queue_name, queue_name, rq_job_id_for
from api.record.tables import Reservation
from api.scheduler.schedule import schedule
from api.stores import db
from tests.support import SHORT, assert_events_chain, submit, wait_status


def test_a_job_an_older_trainq_queued_on_its_tasks_queue_runs(client, workers, redis):
    job_id = submit(client, SHORT)  # no live host: the row waits, unplaced, and nothing reaches RQ
    assert db.session.query(Reservation).filter_by(job_id=job_id).count() == 0
    db.session.commit()
    rq_id = rq_job_id_for(job_id, 1)
    # what trainq before the scheduler (a8e2ac4, api/queue.py enqueue) put into Redis for it
    old = Queue(queue_name("mlp"), connection=redis, serializer=SERIALIZER)
    old.enqueue_call(JOB_FUNCTION, args=(job_id, 1), job_id=rq_id, description=f"training job {job_id} (attempt 1)")
    redis.set(enqueued_key(rq_id), 1, ex=3600)
    assert JOB_FUNCTION == "api.worker.run_training_job" and old.count == 1

    worker = workers()
    schedule()  # the pass a submit, an agent or the reconciler runs: it places the job, then enqueues it
    wait_status(job_id, "completed", timeout=120)
    assert old.count == 0  # moved, not left behind to run twice
    assert fetch(rq_id, redis).origin == host_queue_name(worker.name)
    assert [e[1] for e in assert_events_chain(job_id)] == ["queued", "running", "completed"]
