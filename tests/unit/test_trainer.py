"""The trainer on real data: learns, is deterministic, checkpoints, resumes, stops when asked."""

import copy

import pytest

from builtin_tasks import Progress, TrainingConfig, train

SMALL = {"dataset": "digits", "epochs": 3, "hidden_sizes": [32], "batch_size": 64, "learning_rate": 0.05, "seed": 7}


def test_learns_digits():
    result = train(TrainingConfig.model_validate({**SMALL, "epochs": 5}))
    assert result.epochs_completed == 5
    assert result.metrics["val_accuracy"] > 0.8
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]


def test_synthetic_dataset_trains():
    result = train(TrainingConfig.model_validate({**SMALL, "dataset": "synthetic"}))
    assert result.metrics["val_accuracy"] > 0.5


def test_same_seed_same_metrics():
    cfg = TrainingConfig.model_validate(SMALL)
    assert train(cfg).metrics["val_loss"] == train(cfg).metrics["val_loss"]


def test_progress_callback_reports_steps_and_epochs():
    seen: list[Progress] = []
    result = train(TrainingConfig.model_validate(SMALL), on_progress=seen.append)
    epoch_ends = [p for p in seen if p.epoch_end]
    assert [p.epoch for p in epoch_ends] == [1, 2, 3]
    assert seen[-1].step == result.steps == seen[-1].total_steps
    assert all(a.step <= b.step for a, b in zip(seen, seen[1:], strict=False))


def test_checkpoints_and_resume_match_an_unbroken_run():
    cfg = TrainingConfig.model_validate({**SMALL, "epochs": 4, "checkpoint_every": 1})
    saved: list[dict] = []
    full = train(cfg, save=lambda state: saved.append(copy.deepcopy(state)))
    assert [state["epoch"] for state in saved] == [1, 2, 3, 4]
    assert {"model", "optimizer", "epoch", "batch_in_epoch", "config"} <= set(saved[1])
    resumed = train(cfg, resume_state=saved[1])
    assert resumed.epochs_completed == 4
    assert resumed.metrics["val_loss"] == pytest.approx(full.metrics["val_loss"], rel=1e-5)


def test_should_stop_ends_training_early():
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    result = train(TrainingConfig.model_validate({**SMALL, "epochs": 1000}), should_stop=stop)
    assert result.stopped and result.steps == 5 and result.epochs_completed == 0


def test_pause_mid_epoch_then_resume_equals_an_unbroken_run():
    cfg = TrainingConfig.model_validate({**SMALL, "epochs": 3})
    full = train(cfg)
    steps = {"n": 0}

    def pause_at_step_30() -> bool:
        steps["n"] += 1
        return steps["n"] > 30

    saved: list[dict] = []
    paused = train(cfg, should_pause=pause_at_step_30, save=lambda state: saved.append(copy.deepcopy(state)))
    assert paused.paused and paused.stopped and paused.steps == 30
    [state] = saved
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 30 - 23)  # 23 batches of 64 in an epoch of digits
    resumed = train(cfg, resume_state=state)
    assert resumed.epochs_completed == 3 and resumed.steps == full.steps
    for key in ("val_loss", "val_accuracy", "train_loss"):
        assert resumed.metrics[key] == pytest.approx(full.metrics[key], rel=1e-5), key


# Measured before the built-in MLP moved onto the task SDK (same machine, CPU): same seed, same final metrics.
BEFORE_THE_SDK = [
    ({"dataset": "digits", "epochs": 3, "hidden_sizes": [32], "batch_size": 64, "seed": 1},
     {"train_loss": 2.001470188603779, "val_loss": 1.8890124927988292, "val_accuracy": 0.7047353760445683}),
    ({"dataset": "synthetic", "epochs": 2, "hidden_sizes": [16, 8], "batch_size": 32, "seed": 7, "learning_rate": 0.05},
     {"train_loss": 0.000469715637009358, "val_loss": 0.000214224373921752, "val_accuracy": 1.0}),
]


@pytest.mark.parametrize(("params", "expected"), BEFORE_THE_SDK)
def test_the_mlp_task_on_the_sdk_ends_with_the_metrics_it_had_before(params, expected, tmp_path):
    from builtin_tasks.tasks import mlp
    from trainq import TaskContext

    final = mlp(TaskContext.local(tmp_path, device="cpu"), TrainingConfig.model_validate(params))
    for key, value in expected.items():
        assert final[key] == pytest.approx(value, rel=1e-6), key
