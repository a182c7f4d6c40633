"""The built-in tasks, written on the public SDK like any user's: the digits/synthetic MLP classifier, and a
regression on scikit-learn's bundled diabetes data. Registered through the ``trainq.tasks`` entry point."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.datasets import load_diabetes
from torch import nn

from builtin_tasks.config import TrainingConfig
from builtin_tasks.trainer import Progress, train
from trainq import TaskContext, task


@task("mlp", params=TrainingConfig)
def mlp(ctx: TaskContext, params: TrainingConfig) -> dict[str, float]:
    """Classify scikit-learn's 8x8 digits (or seeded synthetic blobs) with an MLP; pauses at the exact batch.

    Deterministic for a seed: a paused and resumed run ends with the same metrics as an unbroken one.
    """

    def on_progress(progress: Progress) -> None:
        ctx.total_steps = progress.total_steps
        if progress.epoch_end:
            ctx.report(epoch=progress.epoch, step=progress.step, **progress.metrics)
        else:
            ctx.report(step=progress.step, loss=progress.loss)

    result = train(
        params, on_progress=on_progress,
        should_stop=lambda: ctx.should_stop() and ctx.stop_reason != "pause",
        should_pause=lambda: ctx.should_stop() and ctx.stop_reason == "pause",
        save=ctx.checkpoint, resume_state=ctx.restore(), device=str(ctx.device),
    )
    if result.stopped:
        return {}
    return {name: value for name, value in result.metrics.items() if name != "epoch_seconds"}


class DiabetesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(40, ge=1, le=10_000, description="passes over the training split")
    hidden: int = Field(32, ge=1, le=1024, description="width of the hidden layer")
    lr: float = Field(0.01, gt=0, le=1, description="Adam's learning rate")
    batch_size: int = Field(32, ge=1, le=512)
    weight_decay: float = Field(0.0, ge=0, le=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)


@task("diabetes-regression", params=DiabetesParams)
def diabetes_regression(ctx: TaskContext, params: DiabetesParams) -> dict[str, float]:
    """Predict disease progression from scikit-learn's bundled diabetes data (regression, MSE and R²).

    Checkpoints every epoch and saves the trained model as the artifact ``model.pt``.
    """
    torch.manual_seed(params.seed)
    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.float32).unsqueeze(1)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(params.seed))
    cut = int(len(x) * 0.8)
    train_idx, val_idx = order[:cut], order[cut:]
    mean, std = x[train_idx].mean(0), x[train_idx].std(0)
    y_mean, y_std = y[train_idx].mean(), y[train_idx].std()
    x, y = (x - mean) / std, (y - y_mean) / y_std
    model = nn.Sequential(nn.Linear(x.shape[1], params.hidden), nn.ReLU(), nn.Linear(params.hidden, 1)).to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loss_fn = nn.MSELoss()

    start = 0
    state = ctx.restore()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"]
    metrics: dict[str, Any] = {}
    for epoch in range(start, params.epochs):
        model.train()
        generator = torch.Generator().manual_seed(params.seed * 7919 + epoch)
        shuffled = train_idx[torch.randperm(len(train_idx), generator=generator)]
        total = 0.0
        for first in range(0, len(shuffled), params.batch_size):
            batch = shuffled[first:first + params.batch_size]
            xb, yb = x[batch].to(ctx.device), y[batch].to(ctx.device)
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            pred = model(x[val_idx].to(ctx.device)).cpu()
        val_mse = float(((pred - y[val_idx]) ** 2).mean())
        val_r2 = 1 - val_mse / float(((y[val_idx] - y[val_idx].mean()) ** 2).mean())
        metrics = {"train_mse": total / len(shuffled), "val_mse": val_mse, "val_r2": val_r2}
        ctx.report(epoch=epoch + 1, **metrics)
        ctx.log.info("epoch %d/%d: train_mse %.4f, val_mse %.4f, val_r2 %.3f", epoch + 1, params.epochs,
                     metrics["train_mse"], val_mse, val_r2)
        ctx.checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1})
        if ctx.should_stop():
            return {}
    ctx.save_artifact("model.pt", model.state_dict())
    return metrics
