"""What runs a task: where its code comes from (its installed package and version, the git commit of its source,
dirty or not) and the versions of Python, torch, CUDA and the GPU driver. The worker records them with every
attempt (issue 23, item 8). Nothing here initialises CUDA: torch's CUDA version is the one it was built with, and
the driver's is read from ``/proc/driver/nvidia/version``."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

_DRIVER = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+([0-9][0-9.]+)")


@functools.cache
def source(module: str) -> dict[str, Any]:
    """The distribution that holds ``module`` (name and version; None for a module that is not installed) and the
    git commit of its source file's repository (None outside one) and whether that repository had uncommitted
    changes. Cached: a worker reads it once, when it imports its tasks, which is the code its jobs run."""
    path = _source_file(module)
    dist = _distribution(module.split(".")[0], path) if path else None
    commit, dirty = _git(path.parent if path else None)
    return {"package": dist.metadata["Name"] if dist else None, "package_version": dist.version if dist else None,
            "git_commit": commit, "git_dirty": dirty}


def _source_file(module: str) -> Path | None:
    found = sys.modules.get(module)
    path = getattr(found, "__file__", None)
    return Path(path).resolve() if path else None


def _distribution(top: str, path: Path) -> importlib.metadata.Distribution | None:
    """The installed distribution that holds the file ``path`` of the top-level package ``top``: one that lists it
    among its files, or an editable install of a folder above it. A distribution that merely ships a package of
    the same name (several ship a ``tests``) is not it."""
    for name in importlib.metadata.packages_distributions().get(top) or []:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in dist.files or []:
            if file.name == path.name and Path(str(dist.locate_file(file))).resolve() == path:
                return dist
        try:
            direct = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        url = direct.get("url", "")
        if direct.get("dir_info", {}).get("editable") and url.startswith("file://"):
            root = Path(unquote(urlsplit(url).path)).resolve()
            if path.is_relative_to(root):
                return dist
    return None


def _git(folder: Path | None) -> tuple[str | None, bool | None]:
    """HEAD of the repository holding ``folder`` and whether its tracked files differ from it; (None, None) when
    it is in none (or git is missing)."""
    if folder is None:
        return None, None
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None, None
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head.stdout.strip() or None, bool(status.stdout.strip()) if status.returncode == 0 else None


def runtime() -> dict[str, Any]:
    """Python's version, and torch's and the CUDA it was built with (None when torch is not installed), and the
    NVIDIA driver's (None without one). Never imports torch if nothing has yet, never initialises CUDA."""
    torch_version = cuda = None
    torch = sys.modules.get("torch")
    if torch is not None:
        torch_version = str(getattr(torch, "__version__", "")) or None
        cuda = getattr(getattr(torch, "version", None), "cuda", None)
    else:
        try:
            torch_version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"python": platform.python_version(), "torch": torch_version, "cuda": cuda, "gpu_driver": gpu_driver()}


def gpu_driver(path: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    try:
        match = _DRIVER.search(path.read_text(errors="replace"))
    except OSError:
        return None
    return match[1] if match else None
