"""Each attempt's scratch folder (``ctx.workdir``): made, held and swept on the host that runs it (the one home of
its name, ``workdir_prefix``, and of its removal).

The horse makes ``<temp>/trainq-<job id>-a<attempt>-<random>`` and holds an exclusive ``flock`` on a file inside it
for its whole life (its DataLoader workers share the lock: they inherit the open file). The kernel lets go of the
lock when the last of them dies, however it died: SIGKILL of the worker, the horse or its group. A sweep (at worker
start, and every ``SCRATCH_SWEEP_INTERVAL`` from the reconciler on its own host) removes every such folder whose lock
it can take, and one without a lock file once it is older than ``grace`` (a day): such a folder was made by a worker
of an earlier version, whose live attempts hold no lock to show (a rolling upgrade, or another checkout's tests on
a shared host), or by a horse that died between making and locking it. A live attempt's folder is never removed:
its lock is held.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".trainq-attempt.lock"
FOLDER = re.compile(r"trainq-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-a\d+-.+")


def workdir_prefix(job_id: str, attempt: int) -> str:
    """``ctx.workdir`` of a job's attempt is a fresh folder in the temp folder named with this prefix."""
    return f"trainq-{job_id}-a{attempt}-"


def remove_workdirs(job_id: str, attempt: int) -> None:
    """The worker's clean-up after its horse ended (a killed horse could not run its own ``release``)."""
    for path in Path(tempfile.gettempdir()).glob(workdir_prefix(job_id, attempt) + "*"):
        shutil.rmtree(path, ignore_errors=True)


def make_workdir(job_id: str, attempt: int, base: str | Path | None = None) -> tuple[Path, int]:
    """A fresh scratch folder for the attempt, and the descriptor of its lock (held until the process ends or
    ``release`` closes it)."""
    folder = Path(tempfile.mkdtemp(prefix=workdir_prefix(job_id, attempt), dir=base))
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return folder, fd


def release(folder: Path, fd: int) -> None:
    """The attempt's own clean-up: the folder removed, then its lock let go."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.close(fd)
    except OSError:
        pass


LOCKLESS_GRACE = 24 * 3600.0


def sweep(base: str | Path | None = None, grace: float = LOCKLESS_GRACE,
          clock: Callable[[], float] = time.time) -> list[Path]:
    """Remove the scratch folders in ``base`` (the temp folder) that no live attempt holds; the removed paths."""
    removed = []
    try:
        entries = list(os.scandir(base or tempfile.gettempdir()))
    except OSError:
        return []
    for entry in entries:
        if not FOLDER.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        folder = Path(entry.path)
        if _abandoned(folder, grace, clock):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("removed %d scratch folder(s) left by attempts that died: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def _abandoned(folder: Path, grace: float, clock: Callable[[], float]) -> bool:
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:  # no lock (yet): only an old one is taken for abandoned
        try:
            return clock() - folder.stat().st_mtime > grace
        except OSError:
            return False
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: its attempt lives
    finally:
        os.close(fd)  # (closing also lets go of a lock this call took)
    return True
