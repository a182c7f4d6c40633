"""What a job needs of a host, as data: whole GPUs, CPU cores and memory. A task may declare its defaults
(``@task(..., resources=Resources(gpus=1))``); a submit may ask otherwise; what is left unsaid is
``{gpus: 0, cpus: 1}`` and no memory limit.

GPUs are whole: a job that asks one gets one device to itself (no sharing, no fractions). CPUs are whole cores:
the job's threads (``OMP_NUM_THREADS``, ``torch.set_num_threads``) and, where the OS allows, its affinity follow
them. ``memory_gb`` is checked, not guessed: the job's processes are held to it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULTS: dict[str, Any] = {"gpus": 0, "cpus": 1, "memory_gb": None}


class Resources(BaseModel):
    """A job's needs. Every field optional; unset fields fall back (the submit's, then the task's, then
    ``DEFAULTS``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: int | None = Field(None, ge=0, le=64, strict=True, description="whole GPUs, each to the job alone")
    cpus: int | None = Field(None, ge=1, le=1024, strict=True, description="CPU cores (threads and affinity)")
    memory_gb: float | None = Field(None, gt=0, le=65536, description="memory its processes may use, in GB")

    def given(self) -> dict[str, Any]:
        """The fields this one sets."""
        return {name: getattr(self, name) for name in self.model_fields_set if getattr(self, name) is not None}


def resolve(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """The job's resources: each field from the first layer that sets it, then ``DEFAULTS``."""
    resolved = dict(DEFAULTS)
    for layer in reversed([layer for layer in layers if layer]):
        resolved.update({k: v for k, v in layer.items() if v is not None})
    return resolved
