"""An attempt's end, kept where neither PostgreSQL nor Redis has to be up: a small JSON file beside the job's
checkpoints, written atomically (fsynced) before the worker's final write, and the artifact rows a task saved
while PostgreSQL was down.

The worker writes ``outcome-a<attempt>.json`` in ``CHECKPOINT_DIR/<job id>/`` before it records a completion; once
that write lands, the file is removed. If PostgreSQL stays down past ``DB_RETRY_SECONDS`` *and* Redis loses the RQ
job (its result with it), the reconciler reads the file before it calls the attempt lost, and records the
completion from it (metrics, progress, artifacts). The file names its attempt: a later attempt never reads it.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from api.record.tables import JobArtifact
from api.stores import db
from trainq.checkpoints import write_atomically

log = logging.getLogger(__name__)

RECORDED_FROM_FILE = "training finished (recorded by the reconciler from the attempt's outcome file: the worker " \
                     "could not reach PostgreSQL and RQ lost the result)"


def outcome_path(checkpoint_dir: str | Path, job_id: str, attempt: int) -> Path:
    return Path(checkpoint_dir) / str(job_id) / f"outcome-a{attempt}.json"


def write_outcome(checkpoint_dir: str | Path, job_id: str, attempt: int, outcome: dict[str, Any]) -> Path | None:
    """Keep ``outcome`` (JSON) durably; None (logged) when the disk refuses: the final write still goes on."""
    path = outcome_path(checkpoint_dir, job_id, attempt)
    data = json.dumps({"attempt": attempt, **outcome}, default=str).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda file: file.write(data))
        _fsync_dir(path.parent)
    except OSError as exc:
        log.warning("job %s: could not keep the outcome beside its checkpoints (%s)", job_id, exc)
        return None
    return path


def read_outcome(checkpoint_dir: str | Path, job_id: str, attempt: int) -> dict[str, Any] | None:
    path = outcome_path(checkpoint_dir, job_id, attempt)
    try:
        outcome = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return outcome if isinstance(outcome, dict) and outcome.get("attempt") == attempt else None


def remove_outcome(checkpoint_dir: str | Path, job_id: str, attempt: int) -> None:
    try:
        outcome_path(checkpoint_dir, job_id, attempt).unlink(missing_ok=True)
    except OSError:
        pass


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def completion_fields(outcome: dict[str, Any]) -> dict[str, Any]:
    """The row's columns for a completion read from an outcome file (the reconciler's write)."""
    columns = ("metrics", "epoch", "step", "total_steps", "total_epochs", "checkpoint_path")
    fields = {k: outcome[k] for k in columns if outcome.get(k) is not None}
    if outcome.get("history"):
        fields["history"] = text("training_jobs.history || CAST(:outcome_history AS jsonb)").bindparams(
            outcome_history=json.dumps(outcome["history"]))
    return fields


def artifact_row(job_id: str | uuid.UUID, attempt: int, artifact: dict[str, Any]) -> dict[str, Any]:
    created = artifact.get("created_at")
    return {"job_id": uuid.UUID(str(job_id)), "name": artifact["name"], "size": artifact["size"],
            "sha256": artifact["sha256"], "attempt": attempt, "path": artifact["path"],
            "created_at": datetime.fromtimestamp(created, UTC) if isinstance(created, int | float)
            else datetime.now(UTC)}


def upsert_artifacts(rows: list[dict[str, Any]]) -> None:
    """Insert (or replace, by job and name) artifact rows, in the session's transaction, and commit."""
    if not rows:
        return
    statement = pg_insert(JobArtifact).values(rows)
    db.session.execute(statement.on_conflict_do_update(
        index_elements=[JobArtifact.job_id, JobArtifact.name],
        set_={k: statement.excluded[k] for k in ("size", "sha256", "attempt", "path", "created_at")}))
    db.session.commit()
