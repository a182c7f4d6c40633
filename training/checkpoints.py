"""Checkpoints: model + optimizer + epoch (+ the data order RNG) in one ``torch.save`` file per epoch."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^epoch-(\d+)(?:-batch-(\d+))?\.pt$")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    epoch: int  # epochs completed
    batch: int  # batches done in the next epoch (0 for an epoch-end checkpoint)
    size_bytes: int


def checkpoint_path(directory: Path, epoch: int, batch: int = 0) -> Path:
    return directory / (f"epoch-{epoch:06d}.pt" if not batch else f"epoch-{epoch:06d}-batch-{batch:06d}.pt")


def save_checkpoint(directory: Path, epoch: int, state: dict[str, Any], batch: int = 0) -> Path:
    """Write atomically (temp file + rename) so a kill mid-write never leaves a torn checkpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, epoch, batch)
    tmp = path.with_suffix(".tmp")
    torch.save({**state, "epoch": epoch, "batch_in_epoch": batch}, tmp)
    tmp.replace(path)
    return path


def list_checkpoints(directory: Path) -> list[CheckpointInfo]:
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        match = _NAME.match(child.name)
        if match:
            found.append(CheckpointInfo(child, int(match.group(1)), int(match.group(2) or 0), child.stat().st_size))
    return sorted(found, key=lambda c: (c.epoch, c.batch))


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
