"""The public SDK on its own: the @task registry, discovery, and TaskContext's files (no service involved)."""

from __future__ import annotations

import logging
import math
import sys

import pytest
import torch
from pydantic import BaseModel

import trainq
from trainq import TaskContext, TaskError, task
from trainq.checkpoints import list_checkpoints
from trainq.context import NON_FINITE, LocalSink, NonFiniteMetric, check_artifact_name


class P(BaseModel):
    n: int = 1


def test_task_registers_with_its_docstring_as_description():
    @task("unit-sdk-one", params=P)
    def one(ctx: TaskContext, params: P) -> dict:
        """Does one thing.

        More words that are not the description."""
        return {"n": params.n}

    registered = trainq.registry()["unit-sdk-one"]
    assert registered is one and registered.description == "Does one thing."
    assert registered.params_schema()["properties"]["n"] == {"default": 1, "title": "N", "type": "integer"}
    assert len(registered.code_version()) == 16 and registered.spec()["module"] == __name__
    assert one(None, P(n=3)) == {"n": 3}  # still a plain function to call


@pytest.mark.parametrize("name", ["", "Upper", "-dash-first", "x" * 65, "with space", "a/b", 5])
def test_bad_task_names_are_refused(name):
    with pytest.raises(TaskError, match="task name"):
        task(name, params=P)


def test_params_must_be_a_pydantic_model():
    with pytest.raises(TaskError, match="pydantic BaseModel"):
        task("unit-sdk-bad", params=dict)


def test_a_task_declares_its_primary_metric_and_a_context_its_totals(tmp_path):
    @task("unit-sdk-metric", params=P, metric="val_acc", mode="max")
    def scored(ctx: TaskContext, params: P) -> dict:
        ctx.total_epochs = 4
        ctx.total_steps = 40
        return {}

    assert scored.spec()["metric"] == {"name": "val_acc", "mode": "max"}
    ctx = TaskContext.local(tmp_path)
    scored(ctx, P())
    assert (ctx._sink.total_steps, ctx._sink.total_epochs) == (40, 4)
    with pytest.raises(TaskError, match="mode must be 'min'"):
        task("unit-sdk-mode", params=P, metric="acc", mode="up")
    with pytest.raises(TaskError, match="is not a metric name"):
        task("unit-sdk-metric-name", params=P, metric="val loss")


def test_no_builtin_task_is_special():
    """The built-ins declare their primary metric and their epochs like any task: nothing on the server names them."""
    import builtin_tasks.tasks  # noqa: F401 - registers them

    specs = {name: t.spec() for name, t in trainq.registry().items()}
    assert specs["mlp"]["metric"] == {"name": "val_loss", "mode": "min"}
    assert specs["diabetes-regression"]["metric"] == {"name": "val_mse", "mode": "min"}


def test_a_name_taken_by_another_function_is_refused():
    @task("unit-sdk-taken", params=P)
    def first(ctx, params):
        return {}

    with pytest.raises(TaskError, match="declared twice"):
        @task("unit-sdk-taken", params=P)
        def second(ctx, params):
            return {}


def test_discovery_imports_modules_once_and_reports_broken_ones(monkeypatch):
    sys.modules.pop("tests.task_modules.broken", None)
    report = trainq.load_task_modules({"TRAINQ_TASKS": "tests.task_modules.sample, tests.task_modules.broken,"})
    assert "builtin_tasks.tasks" in report.modules and "tests.task_modules.sample" in report.modules  # entry point too
    assert list(report.errors) == ["tests.task_modules.broken"]
    assert "RuntimeError: this module is broken on purpose" in report.errors["tests.task_modules.broken"]
    assert {"mlp", "diabetes-regression", "test-loop", "test-raise"} <= set(report.tasks)


def test_checkpoints_are_numbered_atomic_and_the_newest_n_kept(tmp_path):
    ctx = TaskContext.local(tmp_path)
    ctx.keep_checkpoints = 2
    assert ctx.restore() is None
    for epoch in (1, 2, 3):
        ctx.report(epoch=epoch, step=epoch * 10, loss=1.0 / epoch)
        ctx.checkpoint({"epoch": epoch, "weights": torch.ones(2) * epoch})
    kept = list_checkpoints(tmp_path / "checkpoints")
    assert [(c.seq, c.epoch, c.step) for c in kept] == [(2, 2, 20), (3, 3, 30)]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    state = TaskContext.local(tmp_path).restore()  # a later attempt sees the newest
    assert state["epoch"] == 3 and torch.equal(state["weights"], torch.ones(2) * 3)


def test_report_takes_numbers_and_tensors_and_refuses_anything_else(tmp_path):
    ctx = TaskContext.local(tmp_path)
    sink = ctx._sink
    assert isinstance(sink, LocalSink)
    ctx.report(step=1, loss=torch.tensor(0.5), acc=1, bad=math.nan)
    assert sink.entries[-1] == {"step": 1, "loss": 0.5, "acc": 1, "bad": "NaN"}  # kept visible: JSON has no NaN
    with pytest.raises(TypeError, match="note must be a number"):
        ctx.report(step=2, note="fine")
    with pytest.raises(TypeError, match="flag must be a number"):
        ctx.report(step=2, flag=True)
    with pytest.raises(TypeError, match="weights must be a number"):
        ctx.report(step=2, weights=torch.ones(3))
    with pytest.raises(TypeError, match="done must be a number"):
        ctx.report(step=2, done=torch.tensor(True))
    ctx.report(step=3, loss=torch.tensor(0.25, requires_grad=True) * 2, count=torch.tensor(7), big=math.inf,
               low=torch.tensor(-math.inf))
    assert sink.entries[-1] == {"step": 3, "loss": 0.5, "count": 7, "big": "Infinity", "low": "-Infinity"}
    assert all(type(v) in (int, float) for v in sink.entries[-1].values() if v not in NON_FINITE)


def test_fail_on_nan_stops_the_task_at_a_non_finite_objective_after_recording_it(tmp_path):
    ctx = TaskContext.local(tmp_path)
    ctx.fail_on_nan, ctx.primary_metric = True, "score"
    ctx.report(step=1, accuracy=math.nan, loss=1.0)  # not an objective: kept, training goes on
    with pytest.raises(NonFiniteMetric, match="^val_loss became NaN at step 812$"):
        ctx.report(step=812, val_loss=torch.tensor(math.nan))
    assert ctx._sink.entries[-1] == {"step": 812, "val_loss": "NaN"}  # the curve shows where it went
    with pytest.raises(NonFiniteMetric, match="^score became -Infinity at epoch 3$"):
        ctx.report(epoch=3, score=-math.inf)
    off = TaskContext.local(tmp_path)
    off.report(step=1, loss=math.nan)  # fail_on_nan is opt-in
    assert off._sink.entries[-1]["loss"] == "NaN"


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "..", ".hidden", "", "x" * 129, "a b"])
def test_artifact_names_must_be_plain_file_names(name, tmp_path):
    with pytest.raises(ValueError, match="plain file name"):
        check_artifact_name(name)
    with pytest.raises(ValueError):
        TaskContext.local(tmp_path).save_artifact(name, b"x")
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


def test_artifacts_from_bytes_paths_and_objects(tmp_path):
    ctx = TaskContext.local(tmp_path)
    source = tmp_path / "report.txt"
    source.write_text("hello")
    assert ctx.save_artifact("raw.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert ctx.save_artifact("report.txt", source).read_text() == "hello"
    saved = ctx.save_artifact("weights.pt", {"w": torch.zeros(3)})
    assert torch.equal(torch.load(saved, weights_only=True)["w"], torch.zeros(3))


def test_should_stop_follows_the_sink_and_remembers_why(tmp_path):
    class Pausing(LocalSink):
        asked = False

        def stop_reason(self):
            return "pause" if self.asked else None

    sink = Pausing(TaskContext.local(tmp_path).log)
    ctx = TaskContext(job_id="j", attempt=1, checkpoint_dir=tmp_path / "c", artifact_dir=tmp_path / "a",
                      workdir=tmp_path / "w", log=sink.log, sink=sink)
    assert not ctx.should_stop() and ctx.stop_reason is None
    sink.asked = True
    assert ctx.should_stop() and ctx.stop_reason == "pause"


def test_the_second_builtin_learns_the_diabetes_data(tmp_path):
    from builtin_tasks.tasks import DiabetesParams, diabetes_regression

    ctx = TaskContext.local(tmp_path, device="cpu")
    final = diabetes_regression(ctx, DiabetesParams(epochs=30, seed=1))
    assert final["val_r2"] > 0.3 and final["val_mse"] < final["train_mse"] * 3
    assert [e["epoch"] for e in ctx._sink.entries] == list(range(1, 31))
    assert (tmp_path / "artifacts" / "model.pt").exists()
    resumed = diabetes_regression(TaskContext.local(tmp_path, device="cpu"), DiabetesParams(epochs=35, seed=1))
    assert set(resumed) == {"train_mse", "val_mse", "val_r2"}  # restored at epoch 30, trained 5 more


def test_the_worker_imports_what_torch_loads_lazily_without_initialising_cuda():
    from api.worker.agent import import_lazy_modules

    assert import_lazy_modules() == ["optuna", "torch._dynamo"]
    assert "torch._dynamo" in sys.modules and not torch.cuda.is_initialized()


class CoalescingSink(LocalSink):
    coalesce_seconds = 3600.0


def test_step_reports_are_merged_and_handed_on_at_most_every_coalesce_seconds(tmp_path):
    sink = CoalescingSink(logging.getLogger("test"))
    ctx = TaskContext(job_id="j", attempt=1, checkpoint_dir=tmp_path / "c", artifact_dir=tmp_path / "a",
                      workdir=tmp_path / "w", log=sink.log, sink=sink)
    ctx.report(step=1, loss=1.0)  # the first goes at once
    for step in range(2, 101):
        ctx.report(step=step, loss=1.0 / step, **({"lr": 0.1} if step == 50 else {}))
    assert sink.entries == [{"step": 1, "loss": 1.0}]
    ctx.report(epoch=1, step=100, val_loss=0.5)  # an epoch report hands the held steps on first, in order
    assert sink.entries[1:] == [{"step": 100, "loss": 0.01, "lr": 0.1}, {"epoch": 1, "step": 100, "val_loss": 0.5}]
    ctx.report(step=101, loss=0.009)
    ctx.flush_reports()  # what the worker does when the task returns
    assert sink.entries[-1] == {"step": 101, "loss": 0.009}
    ctx.report(step=102, loss=0.008)
    ctx.checkpoint({"w": 1})  # a checkpoint's row write shows the newest step
    assert sink.entries[-1] == {"step": 102, "loss": 0.008}
