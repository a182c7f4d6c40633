# trainq_sine/tasks.py
import math

import torch
from pydantic import BaseModel, Field
from torch import nn

from trainq import TaskContext, task


class Params(BaseModel):
    epochs: int = Field(20, ge=1, le=10_000)
    lr: float = Field(1e-2, gt=0, le=1)
    hidden: int = Field(32, ge=1, le=512, description="LSTM width")
    noise: float = Field(0.05, ge=0, le=1, description="noise added to the sine")
    seed: int = Field(0, ge=0, le=2**31 - 1)


def noisy_sine(seed: int, noise: float, n: int, length: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` windows of a noisy sine; the target is each window shifted by one step."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, 1, generator=g) * 2 * math.pi + torch.arange(length + 1) * 0.2
    wave = torch.sin(t) + noise * torch.randn(n, length + 1, generator=g)
    return wave[:, :-1, None], wave[:, 1:, None]


class SineLSTM(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.lstm, self.head = nn.LSTM(1, hidden, batch_first=True), nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0])


@task("sine-lstm", params=Params)
def sine_lstm(ctx: TaskContext, params: Params) -> dict:
    """Fit an LSTM to a noisy sine wave."""
    torch.manual_seed(params.seed)
    x, y = (t.to(ctx.device) for t in noisy_sine(params.seed, params.noise, n=512))
    x_val, y_val = (t.to(ctx.device) for t in noisy_sine(params.seed + 1, params.noise, n=128))
    model = SineLSTM(params.hidden).to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    loss_fn = nn.MSELoss()

    state = ctx.restore()  # newest checkpoint's state, or None
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    start = state["epoch"] if state else 0
    val_loss = float("nan")
    for epoch in range(start, params.epochs):
        model.train()
        for first in range(0, len(x), 64):
            optimizer.zero_grad()
            train_loss = loss_fn(model(x[first:first + 64]), y[first:first + 64])
            train_loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(x_val), y_val).item()
        ctx.log.info("epoch %d done", epoch + 1)
        ctx.report(epoch=epoch + 1, train_loss=train_loss.item(), val_loss=val_loss)
        ctx.checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1})
        if ctx.should_stop():  # cancel, pause, or this attempt lost its lease
            return {}
    ctx.save_artifact("model.pt", model.state_dict())
    return {"val_loss": val_loss}
