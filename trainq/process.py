"""Process hygiene for training: a child that outlives its parent must not keep training."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        pass


def loader_worker_init(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: loader workers die with the process that trains, at once."""
    die_with_parent()
