"""The sweep of attempts' scratch folders (issue 26, case 5) on real folders and locks: a folder whose lock no one
holds is removed, a held one stays, one without a lock file stays until it is older than the grace, and nothing
else in the temp folder is touched."""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path

from api.worker import scratch


def folder(base: Path, lock: bool = True) -> Path:
    path = base / f"{scratch.workdir_prefix(str(uuid.uuid4()), 1)}x1"
    path.mkdir()
    if lock:
        (path / scratch.LOCK_FILE).write_text("")
    return path


def test_only_folders_no_live_attempt_holds_are_removed(tmp_path: Path):
    dead, live, young = folder(tmp_path), folder(tmp_path), folder(tmp_path, lock=False)
    other = tmp_path / "trainq-not-an-attempt"
    other.mkdir()
    fd = os.open(live / scratch.LOCK_FILE, os.O_RDWR)  # as the live attempt's horse holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert scratch.sweep(tmp_path) == [dead]
    finally:
        os.close(fd)
    assert not dead.exists() and live.exists() and young.exists() and other.exists()


def test_a_folder_without_a_lock_file_goes_once_past_the_grace(tmp_path: Path):
    lockless = folder(tmp_path, lock=False)
    made = lockless.stat().st_mtime
    assert scratch.sweep(tmp_path, grace=60, clock=lambda: made + 59) == []
    assert scratch.sweep(tmp_path, grace=60, clock=lambda: made + 61) == [lockless]
    assert not lockless.exists()
