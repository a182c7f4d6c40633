"""A job's checkpoint folder: numbered files, written atomically, the newest N kept. Pure file handling:
the API lists them without torch; ``TaskContext`` saves and loads them (with torch)."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

E = TypeVar("E", bound=BaseException)

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


def position(path: str | Path) -> dict[str, int | None] | None:
    """The epoch and step a checkpoint's name says it was written at (the task's last report before it), or None
    for a name that is not a checkpoint's."""
    match = _NAME.fullmatch(Path(path).name)
    if match is None:
        return None
    return {"epoch": int(match["epoch"]) if match["epoch"] else None,
            "step": int(match["step"]) if match["step"] else None}


def newest_checkpoint(folder: Path) -> CheckpointFile | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


class StorageFull(OSError):
    """A checkpoint or an artifact could not be written: its device is full (ENOSPC, or EDQUOT: over a quota). The
    message names what was written and where (``folder``); the OSError behind it is its ``__cause__``."""

    def __init__(self, code: int, message: str, folder: Path) -> None:
        super().__init__(code, message)
        self.folder = folder


class WriteLimitExceeded(Exception):
    """A write stopped before it passed the bytes it was allowed (``write_atomically(limit=...)``); nothing was
    kept."""

    def __init__(self, path: Path, limit: int, written: int) -> None:
        super().__init__(f"writing {path.name} would pass the {limit} bytes allowed")
        self.path, self.limit, self.written = path, limit, written


_FULL = (errno.ENOSPC, errno.EDQUOT)


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc``, then its cause or context, and theirs."""
    found: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in found):
        found.append(exc)
        exc = exc.__cause__ or exc.__context__
    return found


def _in_chain(exc: BaseException, kind: type[E]) -> E | None:
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def disk_full_error(exc: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT error behind ``exc`` (itself, its cause or context: torch reports a failed write as a
    RuntimeError "unexpected pos ..." whose context is the OSError), or None."""
    return next((e for e in _chain(exc) if isinstance(e, OSError) and (e.errno in _FULL or isinstance(e, StorageFull))),
                None)


class _Counted:
    """A file whose ``write`` counts bytes, refuses to pass ``limit``, and remembers the OSError it met."""

    def __init__(self, file: IO[bytes], path: Path, limit: int | None) -> None:
        self._file, self._path, self._limit = file, path, limit
        self.written, self.error = 0, None  # type: ignore[var-annotated]

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if self._limit is not None and self.written + size > self._limit:
            raise WriteLimitExceeded(self._path, self._limit, self.written + size)
        try:
            written = self._file.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.written += written or 0
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def write_atomically(path: Path, write: object, limit: int | None = None, what: str = "file") -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it into place: a reader
    (or a restarted attempt) sees the whole file or none of it. ``limit``: the most bytes it may take; a write that
    would pass it stops there (``WriteLimitExceeded``) and keeps nothing. A full device raises ``StorageFull``
    naming ``what`` and the folder, whatever the writer (torch) made of the OSError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    counted = None
    try:
        with open(tmp, "wb") as file:
            counted = _Counted(file, path, limit)
            write(counted)  # type: ignore[operator]
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        refused = _in_chain(exc, WriteLimitExceeded)  # torch wraps it in a RuntimeError "unexpected pos ..."
        if refused is not None:
            raise refused from None
        full = disk_full_error(exc)
        if full is None and counted is not None and counted.error is not None and counted.error.errno in _FULL:
            full = counted.error
        if full is not None and not isinstance(exc, StorageFull):
            raise StorageFull(full.errno, f"no space left on device writing {what} to {path.parent}",
                              path.parent) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints; the deleted paths."""
    found = list_checkpoints(folder)
    doomed = found[:-keep] if keep > 0 else []
    for checkpoint in doomed:
        checkpoint.path.unlink(missing_ok=True)
    return [c.path for c in doomed]
