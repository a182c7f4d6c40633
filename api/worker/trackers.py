"""A job's reports in TensorBoard and MLflow, written off the training thread.

The task's context hands every report to ``Trackers.track`` before anything is coalesced or sampled (the row's
history samples step-only reports; the trackers get every step): one ``deque.append`` on the training thread.
A thread of the tracker's own drains the deque:

- TensorBoard (``TENSORBOARD``, on by default): event files under ``ARTIFACT_DIR/<job id>/tensorboard``, written
  with ``tensorboardX`` (which needs no torch: the worker imports none). Scalars by step (a report with a step) or
  by epoch (a report with only an epoch), and at the end the job's params as ``hparams`` with its final metrics.
- MLflow (``MLFLOW_TRACKING_URI``): the job is one run (a resumed attempt goes on in the same run) with its params,
  metrics by step, tags (job id, owner, task, code version, attempt) and, on completion, its artifacts. Metrics
  are buffered and sent in batches; while MLflow is unreachable they wait (at most ``MLFLOW_BUFFER`` values, the
  oldest dropped and the loss logged), retried with backoff. An outage never fails the job, nor slows it: nothing
  of it runs on the training thread, and the attempt's end is recorded before the trackers' last flush, which
  gets at most ``TRACKER_FLUSH_TIMEOUT`` seconds.

``job_trackers`` keeps where the reports went (the folder, the run id and its link) for the job page and
``trainq tensorboard``.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from api.record.status import utcnow
from api.record.tables import TrainingJob, User
from api.record.webhook_tables import JobTrackers
from trainq import safe_state
from trainq.context import resolve_entry

MLFLOW_BUFFER = 200_000  # metric values held while MLflow is unreachable
MLFLOW_BATCH = 1000  # MLflow takes at most 1000 metrics per log_batch
MLFLOW_PERIOD = 1.0  # seconds between batches
DRAIN_PERIOD = 0.2
_RUN_STATUS = {"completed": "FINISHED", "failed": "FAILED", "cancelled": "KILLED", "paused": "KILLED",
               "pruned": "KILLED"}


def flatten(params: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested params as ``a.b`` keys."""
    flat: dict[str, Any] = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def points(entry: Mapping[str, Any]) -> list[tuple[str, float, int]]:
    """``(metric, value, step)`` of one report: by its step, or by its epoch when it has no step (and the epoch
    itself as a metric when it has both)."""
    step, epoch = entry.get("step"), entry.get("epoch")
    axis = step if step is not None else epoch
    if axis is None:
        return []
    out = [(k, float(v), int(axis)) for k, v in entry.items()
           if k not in ("step", "epoch") and isinstance(v, int | float) and not isinstance(v, bool)]
    if step is not None and epoch is not None:
        out.append(("epoch", float(epoch), int(step)))
    return out


class Trackers:
    """One attempt's trackers: ``track`` (the training thread's), ``with`` around the attempt (its exit waits at
    most ``TRACKER_FLUSH_TIMEOUT`` for the last writes, after the attempt's end is recorded)."""

    def __init__(self, job: TrainingJob, attempt: int, config: Mapping[str, Any], engine: Engine,
                 jlog: logging.Logger | logging.LoggerAdapter, code_version: str | None = None) -> None:
        self.job_id, self.attempt, self.engine, self.jlog = job.id, attempt, engine, jlog
        self.name, self.task, self.params = job.name, job.task, dict(job.params or {})
        self.owner_id = job.owner_id
        self.owner: str | None = None  # read by the tracker thread (the row here is detached)
        self.code_version = code_version
        self.tensorboard = bool(config.get("TENSORBOARD"))
        self.tb_dir = Path(config["ARTIFACT_DIR"]) / str(job.id) / "tensorboard"
        self.artifact_dir = Path(config["ARTIFACT_DIR"]) / str(job.id)
        self.mlflow_uri = config.get("MLFLOW_TRACKING_URI") or ""
        self.experiment = config.get("MLFLOW_EXPERIMENT") or "trainq"
        self.flush_timeout = float(config.get("TRACKER_FLUSH_TIMEOUT", 10.0))
        self.enabled = self.tensorboard or bool(self.mlflow_uri)
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        # the training thread's only call: no lock, no frame of ours (deque.append is atomic)
        self.track = self._queue.append if self.enabled else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"job-trackers-{job.id}", daemon=True)
        self._writer: Any = None
        self._mlflow: Any = None
        self._run_id: str | None = None
        self._mlflow_pending: collections.deque[tuple[str, float, int, int]] = collections.deque()
        self._mlflow_retry_at = 0.0
        self._mlflow_backoff = 1.0
        self._mlflow_down = False
        self._stop_at = time.monotonic()
        self.lost = 0
        self.reports = 0

    # -- the attempt's side

    def __enter__(self) -> Trackers:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        self._stop_at = time.monotonic()
        self._stop.set()
        self._thread.join(self.flush_timeout)
        if self._thread.is_alive():
            self.jlog.warning("trackers: still sending after %.0f s; left behind (%d reports not yet sent)",
                              self.flush_timeout, len(self._queue) + len(self._mlflow_pending))

    # -- the tracker thread

    def _main(self) -> None:
        try:
            self._open()
            while not self._stop.wait(DRAIN_PERIOD):
                self._drain()
                self._send_mlflow()
            self._drain()
            self._finish()
        except Exception:  # a tracker never fails the job
            self.jlog.exception("trackers stopped")

    def _open(self) -> None:
        if self.tensorboard:
            try:
                from tensorboardX import SummaryWriter

                # the job's artifact folder as the artifacts make it (never through a link), then ours in it
                safe_state.make_folder(self.artifact_dir, "artifacts")
                safe_state.make_folder(self.tb_dir, "TensorBoard files")
                self._writer = SummaryWriter(logdir=str(self.tb_dir), flush_secs=5,
                                             filename_suffix=f".attempt{self.attempt}")
            except Exception as exc:  # not installed, or a folder it cannot write
                self.jlog.warning("TensorBoard: not written (%s: %s)", exc.__class__.__name__, exc)
                self.tensorboard = False
        if self.mlflow_uri:
            self.owner = self._read_owner()
            # an outage must cost a failed call, not minutes of the client's own retries
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
            try:
                from mlflow.tracking import MlflowClient

                self._mlflow = MlflowClient(tracking_uri=self.mlflow_uri)
            except Exception as exc:
                self.jlog.warning("MLflow: not used (%s: %s)", exc.__class__.__name__, exc)
                self.mlflow_uri = ""
        self._save_row()
        if self._mlflow is not None:
            self._start_run()

    def _drain(self) -> None:
        queue, now_ms = self._queue, int(time.time() * 1000)
        while queue:
            entry = resolve_entry(queue.popleft())  # CUDA values read here, never on the training thread
            self.reports += 1
            found = points(entry)
            if self._writer is not None:
                for name, value, step in found:
                    self._writer.add_scalar(name, value, step)
            if self._mlflow is not None:
                self._mlflow_pending.extend((name, value, now_ms, step) for name, value, step in found)
        over = len(self._mlflow_pending) - MLFLOW_BUFFER
        if over > 0:
            for _ in range(over):
                self._mlflow_pending.popleft()
            self.lost += over
            self.jlog.warning("MLflow: unreachable; %d metric values dropped so far (the oldest first)", self.lost)

    # -- MLflow

    def _mlflow_call(self, what: str, call: Any) -> bool:
        """``call()`` unless MLflow is in its backoff; False (and the backoff doubled, to 30 s) when it fails."""
        if time.monotonic() < self._mlflow_retry_at:
            return False
        try:
            call()
        except Exception as exc:
            self._mlflow_retry_at = time.monotonic() + self._mlflow_backoff
            self._mlflow_backoff = min(self._mlflow_backoff * 2, 30.0)
            if not self._mlflow_down:
                self.jlog.warning("MLflow: %s failed (%s); reports are kept and sent when it answers",
                                  what, f"{exc.__class__.__name__}: {exc}"[:300])
            self._mlflow_down = True
            return False
        if self._mlflow_down:
            self.jlog.info("MLflow: reachable again")
        self._mlflow_down, self._mlflow_backoff = False, 1.0
        return True

    def _start_run(self) -> None:
        if self._run_id is not None:
            return
        previous = self._read_run_id()

        def start() -> None:
            client = self._mlflow
            if previous:  # a resumed job goes on in its run
                client.update_run(previous, status="RUNNING")
                self._run_id = previous
                return
            experiment = client.get_experiment_by_name(self.experiment)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment)
            tags = {"mlflow.runName": self.name, "trainq.job_id": str(self.job_id), "trainq.task": self.task,
                    "trainq.owner": self.owner or "", "trainq.code_version": self.code_version or "",
                    "trainq.attempt": str(self.attempt)}
            run = client.create_run(experiment_id, tags=tags, run_name=self.name)
            self._run_id = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in flatten(self.params).items()]
            for i in range(0, len(params), 100):
                client.log_batch(self._run_id, params=params[i:i + 100])

        if self._mlflow_call("starting the run", start) and self._run_id:
            self._save_row()

    def _send_mlflow(self, deadline: float | None = None) -> None:
        if self._mlflow is None:
            return
        if self._run_id is None:
            self._start_run()
            if self._run_id is None:
                return
        from mlflow.entities import Metric

        while self._mlflow_pending and (deadline is None or time.monotonic() < deadline):
            batch = [self._mlflow_pending[i] for i in range(min(MLFLOW_BATCH, len(self._mlflow_pending)))]
            metrics = [Metric(name, value, ts, step) for name, value, ts, step in batch]
            if not self._mlflow_call("logging metrics",
                                     lambda metrics=metrics: self._mlflow.log_batch(self._run_id, metrics=metrics)):
                return
            for _ in batch:
                self._mlflow_pending.popleft()

    def _finish(self) -> None:
        deadline = self._stop_at + max(self.flush_timeout - 1.0, 0.5)  # within the attempt's wait for us
        status, final = self._read_end()
        if self._writer is not None:
            try:
                from tensorboardX.summary import hparams

                metrics = {f"final/{k}": float(v) for k, v in (final or {}).items()
                           if isinstance(v, int | float) and not isinstance(v, bool)}
                hp = {k: v if isinstance(v, int | float | str | bool) else str(v)
                      for k, v in flatten(self.params).items()}
                for summary in hparams(hp, metrics):
                    self._writer.file_writer.add_summary(summary)
                for name, value in metrics.items():
                    self._writer.add_scalar(name, value, 0)
            finally:
                self._writer.close()
        if self._mlflow is not None:
            if not self._mlflow_down:
                self._mlflow_retry_at = 0.0  # what is left goes now, whatever the batch period
            elif time.monotonic() + 5.0 < deadline:
                self._mlflow_retry_at = 0.0  # one more try at the end, if a call's timeout fits in what is left
            self._send_mlflow(deadline)
            if self._run_id is not None and time.monotonic() < deadline:
                run_id, client = self._run_id, self._mlflow
                if status == "completed" and self.artifact_dir.is_dir():
                    try:
                        safe_state.check_folder(self.artifact_dir, "artifacts")
                        files = [p for p in self.artifact_dir.iterdir() if p.is_file() and not p.is_symlink()]
                    except safe_state.UnsafeStateError as exc:
                        self.jlog.warning("MLflow: artifacts not sent (%s)", exc)
                        files = []
                    self._mlflow_call("saving artifacts",
                                      lambda: [client.log_artifact(run_id, str(p)) for p in files])
                self._mlflow_call("ending the run", lambda: (
                    client.set_tag(run_id, "trainq.status", status or "unknown"),
                    client.set_terminated(run_id, status=_RUN_STATUS.get(status or "", "FAILED"))))
            left = len(self._mlflow_pending)
            if left:
                self.lost += left
                self.jlog.warning("MLflow: %d metric values not sent (unreachable until the job ended): lost", left)
        self._save_row()
        self.jlog.info("trackers: %d reports written%s", self.reports,
                       f", {self.lost} lost for MLflow" if self.lost else "")

    # -- the record

    def _read_owner(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return conn.scalar(select(User.name).where(User.id == self.owner_id))
        except Exception:
            return None

    def _read_run_id(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return conn.scalar(select(JobTrackers.mlflow_run_id).where(JobTrackers.job_id == self.job_id))
        except Exception:
            return None

    def _read_end(self) -> tuple[str | None, dict[str, Any] | None]:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(select(TrainingJob.status, TrainingJob.metrics)
                                   .where(TrainingJob.id == self.job_id)).first()
            return (row[0], row[1]) if row else (None, None)
        except Exception:
            return None, None

    def _save_row(self) -> None:
        url = None
        if self._run_id and self.mlflow_uri.startswith(("http://", "https://")):
            url = f"{self.mlflow_uri.rstrip('/')}/#/experiments/0/runs/{self._run_id}"
            try:
                run = self._mlflow.get_run(self._run_id)
                url = f"{self.mlflow_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{self._run_id}"
            except Exception:
                pass
        values = {"tensorboard_dir": str(self.tb_dir.resolve()) if self.tensorboard else None,
                  "mlflow_run_id": self._run_id, "mlflow_url": url, "lost_reports": self.lost,
                  "updated_at": utcnow()}
        statement = pg_insert(JobTrackers).values(job_id=self.job_id, **values)
        if self._run_id is None:  # never forget a run an earlier attempt made
            values = {k: v for k, v in values.items() if k not in ("mlflow_run_id", "mlflow_url")}
        try:
            with self.engine.begin() as conn:
                conn.execute(statement.on_conflict_do_update(index_elements=[JobTrackers.job_id], set_=values))
        except Exception as exc:
            self.jlog.warning("trackers: where the reports go not recorded (%s)", exc.__class__.__name__)
