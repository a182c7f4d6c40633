"""The training loop: deterministic for a seed, reports progress through a callback, stops when asked.

The loop never decides *why* it should stop; the caller's ``should_stop`` says so (a cancel, a lost
attempt), and the caller's ``on_progress`` decides how often anything is written anywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from builtin_tasks.config import TrainingConfig
from builtin_tasks.data import load_splits
from builtin_tasks.networks import build_model
from trainq.process import loader_worker_init

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    epoch: int  # epochs completed so far (0 while the first one runs)
    step: int  # optimizer steps taken so far
    total_steps: int
    loss: float
    metrics: dict[str, Any]
    epoch_end: bool = False


@dataclass
class TrainResult:
    epochs_completed: int
    steps: int
    metrics: dict[str, Any]
    stopped: bool = False
    paused: bool = False  # stopped by ``should_pause`` after writing a checkpoint
    checkpoint_path: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """One generator per epoch, so a run resumed at any epoch sees the same batches as an unbroken one."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _evaluate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, device: torch.device) -> tuple[float, float]:
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x)
            total_loss += loss_fn(out, y).item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            count += len(y)
    model.train()
    return total_loss / max(count, 1), correct / max(count, 1)


def train(
    config: TrainingConfig,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    should_pause: Callable[[], bool] | None = None,
    save: Callable[[dict[str, Any]], Any] | None = None,
    resume_state: dict[str, Any] | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train ``config``; ``save(state)`` keeps a checkpoint every ``config.checkpoint_every`` epochs.

    ``should_stop`` ends training at the next step; ``should_pause`` does too, after saving the exact
    position (epoch and batch), from which ``resume_state`` continues as if never interrupted.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(config.seed)
    splits = load_splits(config.dataset, config.seed)
    model = build_model(config.model, splits.n_features, config.hidden_sizes, splits.n_classes).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    start_epoch, skip_batches, partial = 0, 0, (0.0, 0)
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        start_epoch, skip_batches = int(resume_state["epoch"]), int(resume_state.get("batch_in_epoch", 0))
        partial = tuple(resume_state.get("partial_epoch", (0.0, 0)))
        log.info("resumed at epoch %d batch %d", start_epoch, skip_batches)

    val_loader = DataLoader(splits.val, batch_size=max(config.batch_size, 256))
    steps_per_epoch = -(-len(splits.train) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    step = start_epoch * steps_per_epoch + skip_batches
    result = TrainResult(epochs_completed=start_epoch, steps=step, metrics={})
    report = on_progress or (lambda _p: None)
    stop = should_stop or (lambda: False)
    pause = should_pause or (lambda: False)
    started = time.monotonic()

    def state_dict(epoch: int, batch: int = 0) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": config.model_dump(),
                "epoch": epoch, "batch_in_epoch": batch}

    for epoch in range(start_epoch, config.epochs):
        loader = DataLoader(
            splits.train,
            batch_size=config.batch_size,
            shuffle=True,
            generator=_epoch_generator(config.seed, epoch),
            num_workers=config.num_workers,
            worker_init_fn=loader_worker_init if config.num_workers else None,
        )
        running_loss, seen = partial if epoch == start_epoch else (0.0, 0)
        for batch, (x, y) in enumerate(loader):
            if epoch == start_epoch and batch < skip_batches:
                continue  # replayed from the checkpoint: same generator, same batches
            if stop():
                result.stopped, result.steps = True, step
                log.info("stop requested at epoch %d step %d", epoch, step)
                return result
            if pause() and save is not None:
                result.checkpoint_path = str(save({**state_dict(epoch, batch), "partial_epoch": (running_loss, seen)}))
                result.stopped = result.paused = True
                result.steps = step
                log.info("paused at epoch %d batch %d: %s", epoch, batch, result.checkpoint_path)
                return result
            x, y = x.to(dev), y.to(dev)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            step += 1
            running_loss += loss.item() * len(y)
            seen += len(y)
            report(Progress(epoch, step, total_steps, loss.item(), result.metrics))

        val_loss, val_acc = _evaluate(model, val_loader, loss_fn, dev)
        metrics = {
            "train_loss": running_loss / max(seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "epoch_seconds": time.monotonic() - started,
        }
        result.epochs_completed, result.steps, result.metrics = epoch + 1, step, metrics
        result.history.append({"epoch": epoch + 1, **metrics})
        log.info("epoch %d/%d: train_loss %.4f, val_loss %.4f, val_accuracy %.4f (%.2fs)", epoch + 1, config.epochs,
                 metrics["train_loss"], val_loss, val_acc, metrics["epoch_seconds"])
        report(Progress(epoch + 1, step, total_steps, metrics["train_loss"], metrics, True))
        if save is not None and config.checkpoint_every and (epoch + 1) % config.checkpoint_every == 0:
            result.checkpoint_path = str(save(state_dict(epoch + 1)))
        started = time.monotonic()
    return result
