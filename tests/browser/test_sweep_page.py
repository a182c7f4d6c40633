"""The sweep page in the browser: trials best first with the best marked, the objective against each searched
param, every trial's curve (pruned ones dashed and short), "Compare top 5", "Run again with best params", and
Stop. The trials' ends are written here as a worker's would be (no worker runs them)."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, select, update

from api.record.status import Actor, JobStatus
from api.record.status_writer import transition
from api.record.tables import TrainingJob
from api.service import sweep_driver, sweeps
from api.stores import db

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
         "batch_size": {"type": "choice", "choices": [16, 32, 64]}}


def trials(sweep_id: uuid.UUID) -> list[TrainingJob]:
    db.session.expire_all()
    rows = list(db.session.scalars(select(TrainingJob).where(TrainingJob.sweep_id == sweep_id)
                                   .order_by(TrainingJob.trial_number)))
    db.session.commit()
    return rows


def end(job: TrainingJob, losses: list[float], to: JobStatus, reason: str = "training finished") -> None:
    """What a worker writes: the history, the final metrics, running, then the end."""
    history = [{"epoch": e + 1, "val_mse": v} for e, v in enumerate(losses)]
    db.session.execute(update(TrainingJob).where(TrainingJob.id == job.id).values(
        history=history, metrics={"val_mse": losses[-1]}, epoch=len(losses), updated_at=func.now(),
        pruned_at=len(losses) if to == JobStatus.PRUNED else None))
    db.session.commit()
    transition(job.id, JobStatus.RUNNING, reason="test", actor=Actor.WORKER)
    transition(job.id, to, reason=reason, actor=Actor.WORKER)


def test_the_sweep_page_shows_trials_best_first_with_their_curves(page: Page):
    sweep = sweeps.create("diabetes-regression", SPACE, params={"epochs": 5}, max_trials=8, parallel=6,
                          sampler="random", seed=2, name="page sweep")
    rows = trials(sweep.id)
    assert len(rows) == 6
    finals = [0.9, 0.5, 0.7, 0.6, 0.4, 0.8]
    for job, final in zip(rows[:4], finals[:4], strict=True):
        end(job, [final + 0.4, final + 0.2, final], JobStatus.COMPLETED)
    end(rows[4], [0.95], JobStatus.PRUNED, "pruned at epoch 1 (val_mse 0.95 worse than the median 0.7)")
    end(rows[5], [1.2, 1.1], JobStatus.FAILED, "ValueError: boom")
    sweep_driver.advance(sweep.id)  # as the reconciler's next wake-up: trials 6 and 7 start
    assert len(trials(sweep.id)) == 8

    page.goto(f"/sweeps/{sweep.id}")
    expect(page.locator("#sweep-title")).to_have_text("page sweep")
    expect(page.locator("#trial-rows tr")).to_have_count(8)
    order = page.locator("#trial-rows tr").evaluate_all("rows => rows.map(r => Number(r.dataset.trial))")
    assert order[:4] == [1, 3, 2, 0] and order[-2:] == [6, 7]  # best first (min); trials with no value last
    expect(page.locator("#trial-rows tr.best-trial")).to_have_count(1)
    labels = page.locator("#trial-rows tr").first.locator("td").evaluate_all("tds => tds.map(td => td.dataset.label)")
    assert labels[:4] == ["Best", "Trial", "Status", "val_mse"] and labels[6:] == ["Note", "Job"]  # a phone's labels
    assert sorted(labels[4:6]) == ["batch_size", "lr"]
    assert page.evaluate("logTickLabels(null, [0.0001, 0.001, 0.3])") == ["0.0001", "0.001", "0.3"]  # lr's log axis
    expect(page.locator("#trial-rows tr.best-trial")).to_have_attribute("data-trial", "1")
    expect(page.locator("#trial-rows tr[data-trial='4']")).to_contain_text("pruned at epoch 1")
    expect(page.locator("#best-trial")).to_contain_text("trial 1")
    for name in ("lr", "batch_size"):
        expect(page.locator(f"#param-charts .chart[data-param={name}]")).to_have_attribute("data-points", "6")
    curves = page.locator("#curves")
    expect(curves).to_have_attribute("data-lines", "6")
    expect(curves).to_have_attribute("data-dashed", "1")
    expect(curves).to_have_attribute("data-axis", "epoch")
    expect(curves.locator(".u-legend .u-series", has_text="trial 4 (pruned)")).to_have_count(1)

    top = [str(rows[i].id) for i in (1, 3, 2, 0)]
    expect(page.locator("#compare-top")).to_have_attribute("href", f"/compare?ids={','.join(top)}")
    expect(page.locator("#compare-top")).to_have_text("Compare top 4")
    page.locator("#run-best").click()  # the submit form, filled in with the best trial's task and params
    page.wait_for_url(f"**/?clone={rows[1].id}")
    expect(page.locator("#task-select")).to_have_value("diabetes-regression")
    expect(page.locator("#submit-panel")).to_have_attribute("open", "")

    other = sweeps.create("diabetes-regression", SPACE, params={"epochs": 5}, max_trials=2, parallel=2,
                          sampler="random", seed=3, name="another sweep")  # its trials are not this sweep's
    page.goto(f"/sweeps/{sweep.id}")
    page.locator("#trials-in-list").click()  # the jobs list, filtered on the sweep (kept in the URL)
    page.wait_for_url(f"**/?sweep={sweep.id}")
    expect(page.locator("#sweep-filter")).to_have_value(str(sweep.id))
    expect(page.locator("#job-rows tr")).to_have_count(8)
    listed = page.locator("#job-rows tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    assert sorted(listed) == sorted(str(job.id) for job in trials(sweep.id))
    page.locator("#sweep-filter").fill(str(other.id))
    page.locator("#sweep-filter").press("Enter")
    expect(page.locator("#job-rows tr")).to_have_count(2)
    page.wait_for_url(f"**/?sweep={other.id}")

    page.goto(f"/sweeps/{sweep.id}")
    page.locator("#stop-sweep").click()
    expect(page.locator("#sweep-state")).to_have_text("stopped")
    expect(page.locator("#stop-sweep")).to_be_hidden()
    expect(page.locator("#trial-rows tr[data-trial='6'] td").nth(2)).to_have_text("cancelled")

    page.goto("/sweeps")
    expect(page.locator(f"#sweep-rows tr[data-sweep-id='{sweep.id}']")).to_contain_text("stopped")
    expect(page.locator(f"#sweep-rows tr[data-sweep-id='{sweep.id}'] td[data-label=State]")).to_have_text("stopped")
    page.goto(f"/jobs/{rows[1].id}")
    expect(page.locator("#sweep-trial")).to_contain_text("Trial 1 of its sweep")
