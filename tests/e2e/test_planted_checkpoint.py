"""A pickle planted in a job's checkpoint folder, one that would run a command when unpickled, does not run when
the job resumes from it: the job fails, its reason saying which file was refused and why."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tests.e2e.test_user_tasks import SAMPLE, publish_then_go, submit_task
from tests.support import wait_status


class Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_planted_checkpoint_does_not_run_and_the_job_fails_saying_why(client, workers, redis, settings, tmp_path):
    marker = tmp_path / "ran"
    publish_then_go(workers, redis)
    job_id = submit_task(client, "test-loop", steps=5, sleep=0)  # no worker yet: it waits, queued
    folder = Path(settings["CHECKPOINT_DIR"]) / job_id
    folder.mkdir(mode=0o700)
    torch.save({"step": Planted(marker)}, folder / "ckpt-000001.pt")
    workers(**SAMPLE)
    job = wait_status(job_id, "failed")
    assert job.status_reason.startswith("UnsafeStateError: checkpoint ") and "ckpt-000001.pt refused" in \
        job.status_reason and "posix.system" in job.status_reason, job.status_reason
    assert not marker.exists()
