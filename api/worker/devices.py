"""A job's devices, applied in its work horse before the task runs: exactly what the scheduler reserved for the
attempt on this host. ``CUDA_VISIBLE_DEVICES`` is the reserved GPUs and nothing else (their UUIDs, in PCI bus order;
a fake GPU's index), so ``ctx.device`` is ``cuda:0`` within them; the CPU threads follow ``cpus``
(``OMP_NUM_THREADS`` and friends, ``torch.set_num_threads``) and so does the CPU affinity, where the reserved cores
exist on this machine; and ``memory_gb`` is checked, not guessed: a watchdog thread sums the proportional set
size of the job's processes (the horse and its children: DataLoader workers) and ends the attempt, saying so,
when they use more than the job asked."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import psutil
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from api.record.tables import Host, Reservation
from api.stores import db

log = logging.getLogger(__name__)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class Devices:
    host: str
    gpus: tuple[int, ...]
    visible: str  # CUDA_VISIBLE_DEVICES
    cpus: int
    cpu_ids: tuple[int, ...]
    pinned: bool  # whether the affinity was set
    memory_mb: int | None

    def describe(self) -> str:
        gpus = f"GPUs {','.join(map(str, self.gpus))}" if self.gpus else "no GPU"
        cores = f"{self.cpus} CPU{'s' if self.cpus != 1 else ''}" + (
            f" (cores {','.join(map(str, self.cpu_ids))})" if self.pinned else "")
        memory = f", {self.memory_mb / 1024:g} GB of memory" if self.memory_mb else ""
        return f"on {self.host}: {gpus} (CUDA_VISIBLE_DEVICES={self.visible or '(none)'}), {cores}{memory}"


def reserved(job_id: str, attempt: int) -> Reservation | None:
    """The attempt's reservation with its host and the host's GPUs, loaded in one round trip and detached:
    the commit does not expire them, so reading them later neither loads them again nor holds a connection of
    the session (which the horse's next write would otherwise have to open a new connection beside)."""
    found = db.session.scalars(select(Reservation).options(joinedload(Reservation.host).joinedload(Host.gpus))
                               .where(Reservation.job_id == job_id, Reservation.attempt == attempt)).unique().first()
    if found is not None:  # detached: reading them later must not open a transaction that the attempt would keep
        # through its training (its end would be stamped with that transaction's start)
        for loaded in (*found.host.gpus, found.host, found):
            db.session.expunge(loaded)
    db.session.commit()
    return found


def visible_devices(reservation: Reservation) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` a reservation gives its job: its GPUs' UUIDs (a fake GPU's index), in order."""
    host = reservation.host
    uuids = {gpu.idx: gpu.uuid for gpu in host.gpus}
    return ",".join(str(i) if host.fake_gpus else uuids[i] for i in reservation.gpus)


def apply(reservation: Reservation) -> Devices:
    """Make this process (and what it starts) see only the reserved devices."""
    host = reservation.host
    gpus = tuple(reservation.gpus)
    visible = visible_devices(reservation)
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's numbering as NVML's and nvidia-smi's
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(reservation.cpus)
    if "torch" in sys.modules:  # imported by the worker with the task modules; its thread pool not started yet
        sys.modules["torch"].set_num_threads(reservation.cpus)
    cores = set(reservation.cpu_ids)
    pinned = bool(cores) and cores <= os.sched_getaffinity(0)
    if pinned:  # a host that declared more CPUs than it has (--cpus) gets its threads, not an affinity
        os.sched_setaffinity(0, cores)
    return Devices(host.name, gpus, visible, reservation.cpus, tuple(sorted(cores)), pinned, reservation.memory_mb)


def used_mb(pid: int) -> float:
    """What a process and its descendants use, in MB: their proportional set size (a page shared by several of
    them, as forked DataLoader workers share their parent's, counts once in all)."""
    total = 0
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            try:
                info = process.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    except psutil.NoSuchProcess:
        pass
    return total / 2**20


class MemoryWatch(threading.Thread):
    """Calls ``exceeded(used_mb)`` once when this process's tree uses more than ``limit_mb``."""

    def __init__(self, limit_mb: int, exceeded: Callable[[float], None], every: float = 0.25) -> None:
        super().__init__(name="memory-watch", daemon=True)
        self.limit_mb, self.exceeded, self.every = limit_mb, exceeded, every
        self._stopped = threading.Event()

    def run(self) -> None:
        pid = os.getpid()
        while not self._stopped.wait(self.every):
            used = used_mb(pid)
            if used > self.limit_mb:
                self.exceeded(used)
                return

    def stop(self) -> None:
        self._stopped.set()
