"""Jobs plain RQ runs in the comparisons: ``spin`` keeps a horse busy (orphan detection); ``train_epochs``
trains the built-in MLP config like the ``mlp`` task does, importing ``builtin_tasks`` (and so torch) inside the
job, as a plain RQ job function would: every forked horse imports it afresh (task SDK benchmark)."""

import time


def spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)


def train_epochs(params: dict) -> dict:
    """Train ``TrainingConfig(**params)`` (the ``mlp`` task's params); the final metrics."""
    import builtin_tasks

    result = builtin_tasks.train(builtin_tasks.TrainingConfig.model_validate(params))
    return {name: value for name, value in result.metrics.items() if name != "epoch_seconds"}


def stamp() -> float:
    """The wall-clock time it was entered (``make bench-scheduler``: plain RQ's enqueue -> function entered)."""
    return time.time()
