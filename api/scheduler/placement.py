"""Placement, as a pure function: which waiting jobs go where, on which devices, and why the others wait.

Jobs are taken in their order (oldest first). Each goes to the host offering its task where it fits best (the
fewest GPUs, then CPUs, left free after it: small jobs fill gaps, big holes stay whole), on the lowest free device
indices. A job that does not fit is passed over and the next one tried, so no device idles while a job that
fits waits (backfill). A job that has waited ``backfill_wait_s`` is no longer passed over: the host where it can
run (the one with the most of what it lacks free now, kept from pass to pass) holds its free devices for it as
they free up, so later jobs cannot take them, until it fits (Slurm's and Determined's answer to starvation).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class HostState:
    """One live host: what it has and, while a pass runs, what is still free on it."""

    id: int
    name: str
    cpus: int
    memory_mb: int
    slots: int
    gpus: tuple[int, ...]
    tasks: frozenset[str]
    free_gpus: set[int] = field(default_factory=set)
    free_cpu_ids: list[int] = field(default_factory=list)
    free_memory_mb: int = 0
    free_slots: int = 0

    @classmethod
    def empty(cls, id: int, name: str, cpus: int, memory_mb: int, slots: int, gpus: Iterable[int],
              tasks: Iterable[str]) -> HostState:
        gpus = tuple(sorted(gpus))
        return cls(id, name, cpus, memory_mb, slots, gpus, frozenset(tasks), set(gpus), list(range(cpus)),
                   memory_mb, slots)

    def take(self, gpus: Iterable[int], cpu_ids: Iterable[int], memory_mb: int | None) -> None:
        """Mark what a reservation holds as used."""
        self.free_gpus -= set(gpus)
        used = set(cpu_ids)
        self.free_cpu_ids = [c for c in self.free_cpu_ids if c not in used]
        self.free_memory_mb -= memory_mb or 0
        self.free_slots -= 1


@dataclass(frozen=True)
class Waiting:
    """A queued job with no reservation for its current attempt."""

    id: str
    attempt: int
    task: str
    gpus: int
    cpus: int
    memory_mb: int | None
    waited_s: float
    hold_host: int | None = None  # the host holding devices for it (it waited past backfill_wait_s)


@dataclass(frozen=True)
class Placement:
    job_id: str
    attempt: int
    host_id: int
    gpus: tuple[int, ...]
    cpus: int
    cpu_ids: tuple[int, ...]
    memory_mb: int | None


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    holds: dict[str, int | None] = field(default_factory=dict)  # job -> host holding for it (None: no longer)
    reasons: dict[str, str] = field(default_factory=dict)  # why each job still waits


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _lacks(host: HostState, job: Waiting) -> str | None:
    """What ``host`` lacks, free now, for ``job`` (None: it fits)."""
    if len(host.free_gpus) < job.gpus:
        return "gpus"
    if len(host.free_cpu_ids) < job.cpus:
        return "cpus"
    if job.memory_mb and host.free_memory_mb < job.memory_mb:
        return "memory"
    if host.free_slots < 1:
        return "slots"
    return None


def _could_ever(host: HostState, job: Waiting) -> bool:
    return (len(host.gpus) >= job.gpus and host.cpus >= job.cpus and host.slots >= 1
            and (not job.memory_mb or host.memory_mb >= job.memory_mb))


_NEEDS = {
    "gpus": (lambda job: _plural(job.gpus, "GPU"), lambda h: _plural(len(h.free_gpus), "GPU")),
    "cpus": (lambda job: _plural(job.cpus, "CPU"), lambda h: _plural(len(h.free_cpu_ids), "CPU")),
    "memory": (lambda job: f"{job.memory_mb / 1024:g} GB of memory", lambda h: f"{h.free_memory_mb / 1024:g} GB"),
    "slots": (lambda job: "a free worker slot", lambda h: "none (every slot runs a job)"),
}
_FREE = {"gpus": lambda h: len(h.free_gpus), "cpus": lambda h: len(h.free_cpu_ids),
         "memory": lambda h: h.free_memory_mb, "slots": lambda h: h.free_slots}


def _reason(job: Waiting, offering: list[HostState]) -> str:
    """Why ``job`` waits, in words: what it needs, and the most of it free on any host offering its task."""
    able = [h for h in offering if _could_ever(h, job)]
    if not able:
        biggest = max(offering, key=lambda h: (len(h.gpus), h.cpus, h.memory_mb))
        return (f"waiting for a host that can run it: it needs {_plural(job.gpus, 'GPU')} and "
                f"{_plural(job.cpus, 'CPU')}; the biggest host offering task {job.task} is {biggest.name} "
                f"({_plural(len(biggest.gpus), 'GPU')}, {_plural(biggest.cpus, 'CPU')})")
    lacking = [what for h in able if (what := _lacks(h, job))]
    what = min(lacking, key=list(_NEEDS).index)
    best = max(able, key=_FREE[what])
    need, have = _NEEDS[what]
    return f"waiting for {need(job)}: the most free on any host offering task {job.task} is {have(best)} ({best.name})"


def _fit_score(host: HostState, job: Waiting) -> tuple[int, int, int, str]:
    return (len(host.free_gpus) - job.gpus, len(host.free_cpu_ids) - job.cpus, host.free_slots, host.name)


def plan(waiting: Iterable[Waiting], hosts: Iterable[HostState], backfill_wait_s: float,
         fifo: bool = False) -> Plan:
    """Place what fits, in order; hold devices for the starved; say why the rest waits. ``hosts`` are changed
    (their free devices) as the plan takes them. ``fifo``: no backfill, for comparison (``SCHEDULING=fifo``): the
    first job that waits, though some host could run it, holds back every job behind it."""
    result = Plan()
    hosts = sorted(hosts, key=lambda h: h.name)
    by_id = {h.id: h for h in hosts}
    blocked_by: str | None = None
    for job in waiting:
        if blocked_by is not None:
            result.reasons[job.id] = f"waiting behind job {blocked_by} (SCHEDULING=fifo: first in, first out)"
            continue
        offering = [h for h in hosts if job.task in h.tasks]
        if not offering:
            result.reasons[job.id] = f"waiting for a host offering task {job.task}"
            if job.hold_host is not None:
                result.holds[job.id] = None
            continue
        held_on = by_id.get(job.hold_host) if job.hold_host is not None else None
        candidates = [held_on] if held_on is not None and job.task in held_on.tasks else offering
        fitting = [h for h in candidates if _lacks(h, job) is None]
        if fitting:
            host = min(fitting, key=lambda h: _fit_score(h, job))
            gpus = tuple(sorted(host.free_gpus)[:job.gpus])
            cpu_ids = tuple(host.free_cpu_ids[:job.cpus])
            host.take(gpus, cpu_ids, job.memory_mb)
            result.placements.append(Placement(job.id, job.attempt, host.id, gpus, job.cpus, cpu_ids, job.memory_mb))
            if job.hold_host is not None:
                result.holds[job.id] = None
            continue
        reason = _reason(job, offering)
        able = [h for h in candidates if _could_ever(h, job)] or [h for h in offering if _could_ever(h, job)]
        if fifo:
            result.reasons[job.id] = reason
            blocked_by = job.id if able else None
            continue
        if job.waited_s >= backfill_wait_s and able:
            host = held_on if held_on in able else max(able, key=lambda h: (
                min(len(h.free_gpus), job.gpus), min(len(h.free_cpu_ids), job.cpus), h.free_slots, h.name))
            # what is free there now is kept for this job: later jobs cannot take it, so it fills up
            kept_gpus = sorted(host.free_gpus)[:job.gpus]
            kept_cpus = host.free_cpu_ids[:job.cpus]
            host.take(kept_gpus, kept_cpus, min(job.memory_mb or 0, max(host.free_memory_mb, 0)) or None)
            if job.hold_host != host.id:
                result.holds[job.id] = host.id
            reason += (f"; it has waited past MAX_BACKFILL_WAIT, so {host.name} holds its free devices for it as "
                       f"they free up ({_plural(len(kept_gpus), 'GPU')}, {_plural(len(kept_cpus), 'CPU')} so far)")
        result.reasons[job.id] = reason
    return result
