"""The per-job disk limit: a job whose checkpoints and artifacts pass it fails, with a reason naming the limit
(a real worker and the built-in mlp task); the check counts checkpoints (after KEEP_CHECKPOINTS pruned them) and
artifacts, and runs before a write too (a write that would pass the limit stops there, keeping nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.worker.disk import DiskLimited, JobDiskLimitExceeded
from tests.support import SHORT, row, submit, wait_status

BIG = {**SHORT, "hidden_sizes": [512, 512], "epochs": 4, "checkpoint_every": 1}  # about 2.4 MB a checkpoint


def test_a_job_over_its_disk_limit_fails_naming_the_limit(ctx, make_user, workers, settings):
    _, small_client, _ = make_user("small-disk", job_disk_limit_mb=1)
    _, roomy_client, _ = make_user("roomy-disk", job_disk_limit_mb=50)
    workers()
    over = submit(small_client, BIG)
    fits = submit(roomy_client, BIG)
    job = wait_status(over, "failed", timeout=120)
    assert "JobDiskLimitExceeded" in job.status_reason and "JOB_DISK_LIMIT_MB" in job.status_reason
    assert "over its disk limit of 1 MB" in job.status_reason
    wait_status(fits, "completed", timeout=180)
    folder = Path(settings["CHECKPOINT_DIR"]) / fits
    # pruned to the newest N (the attempt's outcome file may sit beside them until its end has landed)
    assert len(list(folder.glob("ckpt-*"))) <= ctx.config["KEEP_CHECKPOINTS"]


class FakeSink:
    def __init__(self, job_id: str) -> None:
        self.job_id, self.calls = job_id, []

    def report(self, entry: dict) -> None:
        self.calls.append(entry)

    def checkpointed(self, path: Path) -> None:
        self.calls.append(path)

    def artifact_saved(self, artifact: dict) -> None:
        self.calls.append(artifact["name"])

    def stop_reason(self) -> None:
        return None


def test_artifacts_count_against_the_limit_too(ctx, make_user, settings):
    _, user_client, _ = make_user("artifacts", job_disk_limit_mb=1)
    job_id = submit(user_client, SHORT)
    sink = DiskLimited(FakeSink(job_id))
    assert sink.stop_reason() is None  # everything else goes to the wrapped sink
    folder = Path(settings["ARTIFACT_DIR"]) / job_id
    folder.mkdir(parents=True)
    (folder / "small.bin").write_bytes(b"x" * 1000)
    sink.artifact_saved({"name": "small.bin"})
    (folder / "big.bin").write_bytes(b"x" * (1024 * 1024))
    with pytest.raises(JobDiskLimitExceeded, match="JOB_DISK_LIMIT_MB"):
        sink.artifact_saved({"name": "big.bin"})
    assert sink.calls == ["small.bin", "big.bin"]  # recorded, then refused
    assert row(job_id).owner_id is not None


def test_zero_means_no_limit(ctx, make_user, settings):
    _, user_client, _ = make_user("unlimited", job_disk_limit_mb=0)
    job_id = submit(user_client, SHORT)
    folder = Path(settings["CHECKPOINT_DIR"]) / job_id
    folder.mkdir(parents=True)
    (folder / "huge").write_bytes(b"x" * (2 * 1024 * 1024))
    DiskLimited(FakeSink(job_id)).checkpointed(folder / "huge")


def test_a_write_that_would_pass_the_limit_is_refused_before_it_lands(ctx, make_user, settings, tmp_path):
    """Issue 21 item 6: the limit is checked before a write, not after: a checkpoint or artifact that would take the
    job past it stops before it does, nothing of it is kept, and the sink never records it."""
    import logging

    import torch

    from api.worker.disk import job_disk_usage
    from trainq import TaskContext

    _, user_client, _ = make_user("precheck", job_disk_limit_mb=1)
    job_id = submit(user_client, SHORT)
    sink = FakeSink(job_id)
    artifacts = Path(settings["ARTIFACT_DIR"]) / job_id
    checkpoints = Path(settings["CHECKPOINT_DIR"]) / job_id
    context = TaskContext(job_id=job_id, attempt=1, checkpoint_dir=checkpoints, artifact_dir=artifacts,
                          workdir=tmp_path, log=logging.getLogger("precheck"), sink=DiskLimited(sink))
    context.save_artifact("small.bin", b"x" * 1000)
    with pytest.raises(JobDiskLimitExceeded, match="refused to write artifact big.bin"):
        context.save_artifact("big.bin", b"x" * (1024 * 1024))
    assert [p.name for p in artifacts.iterdir()] == ["small.bin"]
    with pytest.raises(JobDiskLimitExceeded, match="refused to write checkpoint"):
        context.checkpoint({"weights": torch.zeros(400_000)})  # about 1.6 MB: stopped at the limit, in torch.save
    assert list(checkpoints.iterdir()) == [] and job_disk_usage(job_id) == 1000
    assert sink.calls == ["small.bin"]  # neither refused write was recorded
    context.checkpoint({"weights": torch.zeros(1000)})  # what fits is written as before
    assert len(sink.calls) == 2
