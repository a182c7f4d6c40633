"""Checkpoints and artifacts are data, never code: what a task saves is checked against an allow-list, every
load is ``torch.load(..., weights_only=True)`` (a pickle that names anything else, ``os.system`` say, is
refused before it runs), and the folders they live in must be real folders no other account may write in.

Loading a full pickle runs whatever it names; a checkpoint folder on storage shared between hosts (as the
README suggests) would otherwise be code execution on every worker for whoever can write there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

ALLOWED = ("tensors, state dicts, numbers, strings, bytes, None, and lists, tuples and dicts of them "
           "(torch.Size, dtypes and devices too)")


class UnsafeStateError(RuntimeError):
    """A checkpoint or artifact (or its folder) that is refused; the message says which and why."""


def check_folder(folder: Path, what: str) -> None:
    """Refuse ``folder`` (a job's checkpoint or artifact folder) if it is a link, not a folder, or writable by
    group or others; the folder above it (``CHECKPOINT_DIR``, ``ARTIFACT_DIR``) must not be writable by
    group or others either, or someone else could swap the job's folder. A missing folder passes."""
    for path, role in ((folder.parent, f"the folder of every job's {what}"), (folder, f"this job's {what}")):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if path is folder and stat.S_ISLNK(st.st_mode):
            raise UnsafeStateError(f"{folder} ({role}) is a symbolic link: refused, it is never followed. Remove "
                                   "the link; the service makes a real folder")
        if path is folder and not stat.S_ISDIR(st.st_mode):
            raise UnsafeStateError(f"{folder} ({role}) is not a folder: remove it")
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o022:
            raise UnsafeStateError(
                f"{path} ({role}) is writable by group or others ({stat.filemode(st.st_mode)}): anyone who can write "
                f"there could plant a file the worker loads. Refused: chmod go-w {path}")


def make_folder(folder: Path, what: str) -> Path:
    """Create ``folder`` (and the folder above it) if missing, writable only by this account, then check it."""
    folder.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o755)
    except FileExistsError:
        pass
    check_folder(folder, what)
    return folder


def check_state(obj: Any, what: str, where: str = "state") -> None:
    """Refuse, naming the first offending entry, anything but what ``load`` loads back (``ALLOWED``)."""
    import torch

    if obj is None or type(obj) in (bool, int, float, complex, str, bytes):
        return
    if isinstance(obj, torch.Tensor | torch.Size | torch.dtype | torch.device):
        return
    if type(obj) in (list, tuple):
        for i, item in enumerate(obj):
            check_state(item, what, f"{where}[{i}]")
        return
    if isinstance(obj, dict) and type(obj).__module__ in ("builtins", "collections"):
        for key, value in obj.items():
            check_state(key, what, f"{where} key {key!r}")
            check_state(value, what, f"{where}[{key!r}]")
        return
    kind = type(obj)
    raise TypeError(f"{what}: {where} is a {kind.__module__}.{kind.__qualname__}; save only {ALLOWED} (e.g. "
                    "a model's state_dict(), a numpy array as torch.from_numpy(a)), so that loading it runs no code")


def load(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load`` of a checkpoint or artifact that loads data only (``weights_only=True``): a file that
    names anything outside torch's allow-list is refused, its objects never built, with an error naming it."""
    import pickle

    import torch

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # torch's message: a paragraph about its default, then the line that names what was refused
            reason = next((line.strip() for line in str(exc).splitlines() if "unsupported" in line.lower()),
                          "not a weights-only file")
            raise UnsafeStateError(
                f"{what} {path} refused: it holds more than {ALLOWED}, and loading it could run code ({reason}). "
                "Nothing in it ran. Delete it if you did not save it") from None
