"""A worker whose checkpoint or artifact storage is full or unwritable takes no jobs until it can write again.

Before each job the worker checks ``CHECKPOINT_DIR`` and ``ARTIFACT_DIR``: a small probe file written and fsynced,
and at least ``STORAGE_MIN_FREE_MB`` free. A horse whose task met a full device (``trainq.checkpoints.StorageFull``)
leaves a note on its host (the folder, and the space free once its half-written file was gone): the worker then
waits until that folder has at least twice that space and ``STORAGE_MIN_FREE_MB`` more, since the write that
failed needed more than was free. While it waits it says why: in its log, and in Redis (``api.queue.paused_key``), which
``/api/health`` lists under ``workers_paused``. It resumes by itself when space returns.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROBE_BYTES = 4096


def _note_path(worker_name: str, base: str | Path | None = None) -> Path:
    return Path(base or tempfile.gettempdir()) / f"trainq-storage-full-{worker_name}.json"


def free_bytes(folder: str | Path) -> int:
    """Bytes an unprivileged writer may still use on ``folder``'s device (its nearest existing parent's)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def note_full(worker_name: str, folder: str | Path, reason: str, base: str | Path | None = None,
              clock: Callable[[], float] = time.time) -> None:
    """From the horse: its task met a full device writing to ``folder``; the worker takes no job until space
    returns. The note is on this host: the worker that ran the horse reads it."""
    try:
        free = free_bytes(folder)
    except OSError:
        free = 0
    note = {"folder": str(folder), "free": free, "reason": reason, "at": clock()}
    try:
        _note_path(worker_name, base).write_text(json.dumps(note))
    except OSError as exc:
        log.warning("could not leave the storage-full note: %s", exc)


def _read_note(worker_name: str, base: str | Path | None) -> dict[str, Any] | None:
    try:
        note = json.loads(_note_path(worker_name, base).read_text())
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) and "folder" in note else None


def probe(folder: str | Path) -> str | None:
    """Why nothing can be written to ``folder`` (made if missing), or None: a small file written, fsynced, removed."""
    path = Path(folder)
    target = path / f".trainq-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        what = "disk full: no space left on device" if full else f"unwritable: {exc.strerror}"
        return f"{what} in {folder}"
    finally:
        try:
            target.unlink(missing_ok=True)
        except OSError:
            pass
    return None


def blocked(worker_name: str, folders: Iterable[str | Path], min_free: int,
            base: str | Path | None = None) -> str | None:
    """Why the worker should take no job now (a reason a person can read), or None."""
    for folder in folders:
        why = probe(folder)
        if why:
            return why
        free = free_bytes(folder)
        if free < min_free:
            return (f"disk full: {free / 2**20:.1f} MB free in {folder}, under STORAGE_MIN_FREE_MB "
                    f"({min_free / 2**20:.0f} MB)")
    note = _read_note(worker_name, base)
    if note is None:
        return None
    need = max(min_free, 2 * int(note.get("free", 0)), int(note.get("free", 0)) + 2**20)
    try:
        free = free_bytes(note["folder"])
    except OSError:
        free = 0
    if free < need:
        return f"{note.get('reason', 'disk full')} ({free / 2**20:.1f} MB free, waiting for {need / 2**20:.1f} MB)"
    _note_path(worker_name, base).unlink(missing_ok=True)
    return None


def clear(worker_name: str, base: str | Path | None = None) -> None:
    _note_path(worker_name, base).unlink(missing_ok=True)
