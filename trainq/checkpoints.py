"""A job's checkpoint folder: numbered files, written atomically, the newest N kept. Pure file handling:
the API lists them without torch; ``TaskContext`` saves and loads them (with torch)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# ckpt-<seq>[-e<epoch>][-s<step>].pt: seq orders them across attempts; epoch and step are the task's last report
_NAME = re.compile(r"ckpt-(?P<seq>\d{6,})(?:-e(?P<epoch>\d+))?(?:-s(?P<step>\d+))?\.pt")


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    seq: int
    epoch: int | None
    step: int | None
    size_bytes: int


def checkpoint_name(seq: int, epoch: int | None = None, step: int | None = None) -> str:
    return f"ckpt-{seq:06d}" + (f"-e{epoch}" if epoch is not None else "") + (f"-s{step}" if step is not None else "") \
        + ".pt"


def list_checkpoints(folder: Path) -> list[CheckpointFile]:
    """Oldest first."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        match = _NAME.fullmatch(entry.name)
        if match and entry.is_file(follow_symlinks=False):
            found.append(CheckpointFile(Path(entry.path), int(match["seq"]),
                                        int(match["epoch"]) if match["epoch"] else None,
                                        int(match["step"]) if match["step"] else None, entry.stat().st_size))
    return sorted(found, key=lambda c: c.seq)


def newest_checkpoint(folder: Path) -> CheckpointFile | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def write_atomically(path: Path, write: object) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it into place: a reader
    (or a restarted attempt) sees the whole file or none of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)  # type: ignore[operator]
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints; the deleted paths."""
    found = list_checkpoints(folder)
    doomed = found[:-keep] if keep > 0 else []
    for checkpoint in doomed:
        checkpoint.path.unlink(missing_ok=True)
    return [c.path for c in doomed]
