"""What ran an attempt, written to its row when the attempt starts (issue 23, item 8): the task's code version (the
hash its worker published), module, package and version, the git commit of its source (dirty or not), and the
versions of Python, torch, CUDA and the GPU driver on this host (``trainq.provenance``: CUDA is never initialised
for it)."""

from __future__ import annotations

import logging
import socket
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from api.worker.liveness import this_attempts_row
from trainq import provenance
from trainq.registry import Task


def of(task: Task, attempt: int) -> dict[str, Any]:
    return {"attempt": attempt, "code_version": task.code_version(), "module": task.module,
            **provenance.source(task.module), **provenance.runtime(), "hostname": socket.gethostname()}


def record(job_id: str, attempt: int, task: Task, engine: Engine, jlog: logging.LoggerAdapter) -> dict[str, Any]:
    """Write ``of(task, attempt)`` to the row while it runs this attempt; a database outage only logs (the job
    trains on: what ran it is a record, not a reason to stop)."""
    found = of(task, attempt)
    try:
        with engine.begin() as conn:
            conn.execute(this_attempts_row(job_id, attempt).values(provenance=found))
    except SQLAlchemyError as exc:
        jlog.warning("what ran this attempt is not recorded: database unavailable (%s)", exc.__class__.__name__)
    return found
