"""The trainer on real data: learns, is deterministic, checkpoints, resumes, stops when asked."""

import pytest

from training import Progress, TrainingConfig, train
from training.checkpoints import list_checkpoints, load_checkpoint

SMALL = {"dataset": "digits", "epochs": 3, "hidden_sizes": [32], "batch_size": 64, "learning_rate": 0.05, "seed": 7}


def test_learns_digits():
    result = train(TrainingConfig.from_dict({**SMALL, "epochs": 5}))
    assert result.epochs_completed == 5
    assert result.metrics["val_accuracy"] > 0.8
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]


def test_synthetic_dataset_trains():
    result = train(TrainingConfig.from_dict({**SMALL, "dataset": "synthetic"}))
    assert result.metrics["val_accuracy"] > 0.5


def test_same_seed_same_metrics():
    cfg = TrainingConfig.from_dict(SMALL)
    assert train(cfg).metrics["val_loss"] == train(cfg).metrics["val_loss"]


def test_progress_callback_reports_steps_and_epochs():
    seen: list[Progress] = []
    result = train(TrainingConfig.from_dict(SMALL), on_progress=seen.append)
    epoch_ends = [p for p in seen if p.epoch_end]
    assert [p.epoch for p in epoch_ends] == [1, 2, 3]
    assert seen[-1].step == result.steps == seen[-1].total_steps
    assert all(a.step <= b.step for a, b in zip(seen, seen[1:], strict=False))


def test_checkpoints_and_resume_match_an_unbroken_run(tmp_path):
    cfg = TrainingConfig.from_dict({**SMALL, "epochs": 4, "checkpoint_every": 1})
    full = train(cfg, checkpoint_dir=tmp_path / "full")
    ckpts = list_checkpoints(tmp_path / "full")
    assert [c.epoch for c in ckpts] == [1, 2, 3, 4]
    state = load_checkpoint(ckpts[1].path)
    assert {"model", "optimizer", "epoch", "config"} <= set(state) and state["epoch"] == 2
    resumed = train(cfg, resume_from=ckpts[1].path)
    assert resumed.epochs_completed == 4
    assert resumed.metrics["val_loss"] == pytest.approx(full.metrics["val_loss"], rel=1e-5)


def test_should_stop_ends_training_early():
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    result = train(TrainingConfig.from_dict({**SMALL, "epochs": 1000}), should_stop=stop)
    assert result.stopped and result.steps == 5 and result.epochs_completed == 0


def test_pause_mid_epoch_then_resume_equals_an_unbroken_run(tmp_path):
    cfg = TrainingConfig.from_dict({**SMALL, "epochs": 3})
    full = train(cfg)
    steps = {"n": 0}

    def pause_at_step_30() -> bool:
        steps["n"] += 1
        return steps["n"] > 30

    paused = train(cfg, should_pause=pause_at_step_30, checkpoint_dir=tmp_path)
    assert paused.paused and paused.stopped and paused.steps == 30
    [ckpt] = list_checkpoints(tmp_path)
    assert (ckpt.epoch, ckpt.batch) == (1, 30 - 23)  # 23 batches of 64 in an epoch of digits
    resumed = train(cfg, resume_from=ckpt.path)
    assert resumed.epochs_completed == 3 and resumed.steps == full.steps
    for key in ("val_loss", "val_accuracy", "train_loss"):
        assert resumed.metrics[key] == pytest.approx(full.metrics[key], rel=1e-5), key
