"""What this host has: its GPUs through NVML (``nvidia-ml-py``: it reads the driver, never initialises CUDA, so
forked work horses can still use the devices), or pretend ones (``--fake-gpus N``, for tests, demos and CI: they
are scheduled like real ones and a job on them trains on the CPU), its CPUs and memory."""

from __future__ import annotations

import logging
import os
import re
import socket

import psutil

from api.scheduler.hosts import Gpu, Inventory

log = logging.getLogger(__name__)

FAKE_GPU_MEMORY_MB = 16 * 1024


class InventoryError(ValueError):
    """The agent cannot offer what it was told to (a GPU that does not exist, a bad size): it refuses to start."""


def nvml_gpus() -> list[Gpu]:
    """Every GPU the driver shows, by NVML index (PCI bus order); none without a driver or without NVML."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("no GPUs: NVML is not available here (%s)", exc)
        return []
    try:
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid, name = pynvml.nvmlDeviceGetUUID(handle), pynvml.nvmlDeviceGetName(handle)
            found.append(Gpu(index, uuid.decode() if isinstance(uuid, bytes) else uuid,
                             name.decode() if isinstance(name, bytes) else name,
                             int(pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20)))
        return found
    finally:
        pynvml.nvmlShutdown()


def fake_gpus(count: int, host: str) -> list[Gpu]:
    """``count`` pretend devices, named after ``host``: two agents on one host claiming them collide, as they
    would over a real device."""
    return [Gpu(i, f"FAKE-{host}-{i}", "fake GPU", FAKE_GPU_MEMORY_MB) for i in range(count)]


def choose(found: list[Gpu], wanted: str | None) -> list[Gpu]:
    """The GPUs to offer: all (``wanted`` empty), none (``"none"``), or the indices listed (``"0,2"``)."""
    if not wanted or not wanted.strip():
        return found
    if wanted.strip().lower() == "none":
        return []
    by_index = {gpu.index: gpu for gpu in found}
    chosen = []
    for part in wanted.split(","):
        if not re.fullmatch(r"\s*\d{1,3}\s*", part):
            raise InventoryError(f"--gpus {wanted!r}: list GPU indices (0,2), or say none")
        index = int(part)
        if index not in by_index:
            have = ", ".join(str(i) for i in sorted(by_index)) or "none"
            raise InventoryError(f"GPU {index} does not exist on this host; the GPUs here are: {have} "
                                 "(nvidia-smi -L lists them)")
        chosen.append(by_index[index])
    return sorted(set(chosen), key=lambda g: g.index)


def memory_mb(text: str | None) -> int:
    """``64G``, ``512M`` or a number of GB; this host's memory when not given."""
    if not text:
        return int(psutil.virtual_memory().total // 2**20)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([GgMm]?)[Bb]?\s*", text)
    if not match:
        raise InventoryError(f"--memory {text!r}: write it as 64G or 512M")
    number, unit = float(match[1]), match[2].upper() or "G"
    return int(number * (1024 if unit == "G" else 1))


def take_stock(name: str, gpus: str | None = None, fake: int = 0, cpus: int | None = None,
               memory: str | None = None, slots: int | None = None, hostname: str | None = None) -> Inventory:
    """This host's inventory for the agent ``name``, as its options narrow or declare it. ``hostname`` (default:
    the machine's) names the host, and its fake GPUs: agents with fake GPUs under different host names are
    different pretend hosts, under one name they claim the same devices."""
    hostname = hostname or socket.gethostname()
    found = fake_gpus(fake, hostname) if fake else nvml_gpus()
    chosen = choose(found, gpus)
    cores = cpus or len(os.sched_getaffinity(0))
    return Inventory(name=name, hostname=hostname, cpus=cores, memory_mb=memory_mb(memory),
                     slots=slots or cores, gpus=tuple(chosen), fake=bool(fake))
