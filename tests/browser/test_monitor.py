"""The monitor as a user drives it: Chromium on the real stack (see conftest). Every wait has a deadline;
"without reload" is checked with a marker set on ``window`` that a reload would wipe."""

from __future__ import annotations

import enum
import hashlib
from pathlib import Path
from typing import Literal

import psutil
import pytest
from playwright.sync_api import Page, expect
from pydantic import BaseModel, Field
from sqlalchemy import delete

from api.record.tables import TaskOffer, TrainingJob
from api.service import catalogue
from api.stores import db
from tests.support import LONG, process_gone, row, submit, wait_for, wait_status, wait_training

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class KindsParams(BaseModel):
    flag: bool = True
    colour: Colour = Colour.GREEN  # a $ref into $defs
    limit: int | None = Field(None, ge=1)  # anyOf with null
    dropout: Literal[0, 0.5] | None = None
    rates: list[float] = [0.1, 0.5]
    label: str = "run"
    layers: list[str] = Field(min_length=1)  # required, no default


def mark_no_reload(page: Page) -> None:
    page.evaluate("window.__noReload = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__noReload === true"), "the page was reloaded"


def shown_actions(page: Page) -> list[str]:
    return page.locator("#actions button").evaluate_all("buttons => buttons.map(b => b.dataset.action)")


def badge(page: Page):
    return page.locator("#status-badge .badge")


def progress_value(page: Page) -> int:
    return int(page.locator("#progress progress").get_attribute("value") or 0)


def open_form(page: Page, task: str | None = None):
    page.goto("/")
    page.locator("#submit-panel summary").click()
    form = page.locator("#submit-form")
    if task:
        form.locator("#task-select").select_option(task)
        expect(form).to_have_attribute("data-task", task)
    return form


def param(form, name: str):
    return form.locator(f"#param-{name}")


def shown_params(form) -> list[str]:
    return form.locator("[data-param]").evaluate_all("inputs => inputs.map(i => i.dataset.param)")


def test_submit_from_the_form_then_watch_it_train_to_completion(page: Page, workers):
    form = open_form(page, "mlp")
    expect(page.locator("#task-workers")).to_contain_text("No live worker offers mlp")
    workers()  # the open form learns (from GET /api/tasks) that a live worker offers it now
    expect(page.locator("#task-workers")).to_have_text("Offered by 1 live worker.", timeout=20_000)
    expect(form.locator("#task-select option[value=mlp]")).to_have_text("mlp")
    form.locator("#job-name").fill("from the form")
    # 12 epochs of batch 2: several seconds even on a fast machine (batch 8 took about 3 s, too few polls to
    # see the curves grow), so the page polls it many times while it trains
    for field, value in [("hidden_sizes", "32"), ("epochs", "12"), ("batch_size", "2"), ("checkpoint_every", "4"),
                         ("seed", "2")]:
        param(form, field).fill(value)
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/jobs/*")
    mark_no_reload(page)
    job_id = page.url.rsplit("/", 1)[1]
    job = row(job_id)
    assert job.name == "from the form" and job.task == "mlp" and job.params["batch_size"] == 2
    assert job.params["hidden_sizes"] == [32] and job.params["epochs"] == 12

    seen_progress, seen_points = set(), set()
    val_loss = page.locator("#charts .chart[data-metric=val_loss]")

    def watch() -> bool:
        seen_progress.add(progress_value(page))
        if val_loss.count():
            seen_points.add(int(val_loss.get_attribute("data-points") or 0))
        return badge(page).text_content() == "completed"

    wait_for(watch, 180, "the page to show completed")
    assert_not_reloaded(page)
    total = row(job_id).total_steps
    assert len(seen_progress - {0, total}) >= 1 and len(seen_points) >= 3, (seen_progress, seen_points)
    expect(page.locator("#progress")).to_contain_text("epoch 12 of 12")
    expect(page.locator("#progress")).to_contain_text(f"step {total} of {total}")
    for metric in ("train_loss", "val_loss", "val_accuracy"):  # one chart per metric, a point per epoch
        expect(page.locator(f"#charts .chart[data-metric={metric}]")).to_have_attribute("data-points", "12")
        expect(page.locator(f"#charts .chart[data-metric={metric}]")).to_have_attribute("data-axis", "epoch")
    assert shown_actions(page) == []  # nothing to do to a completed job
    expect(page.locator("#timeline li")).to_have_count(3)
    expect(page.locator("#checkpoints")).to_contain_text("epoch 12")
    expect(page.locator("#params dd[data-param=batch_size]")).to_have_text("2")


def test_the_form_is_generated_from_the_chosen_tasks_schema(page: Page):
    form = open_form(page, "mlp")
    # no worker is running: the task is known from what workers published, and the page says none is live
    expect(page.locator("#task-workers")).to_contain_text("No live worker offers mlp right now")
    expect(page.locator("#task-description")).to_contain_text("Classify scikit-learn's 8x8 digits")
    expect(form.locator("#task-select option[value=mlp]")).to_have_text("mlp (no live worker)")
    assert shown_params(form) == ["dataset", "model", "hidden_sizes", "epochs", "batch_size", "learning_rate",
                                  "seed", "checkpoint_every", "num_workers"]  # as the model declares them
    expect(param(form, "dataset")).to_have_value('"digits"')  # an enum is a select, its default chosen
    assert param(form, "dataset").locator("option").all_text_contents() == ["digits", "synthetic"]
    assert param(form, "model").locator("option").all_text_contents() == ["mlp"]  # a const too
    expect(param(form, "hidden_sizes")).to_have_value("64")  # a list of integers: comma-separated text
    expect(form.locator("#hint-param-hidden_sizes")).to_contain_text("comma-separated integers 1 to 4096")
    epochs = param(form, "epochs")
    expect(epochs).to_have_value("10")
    assert [epochs.get_attribute(a) for a in ("type", "min", "max", "step")] == ["number", "1", "100000", "1"]
    lr = param(form, "learning_rate")
    expect(lr).to_have_value("0.01")
    assert [lr.get_attribute(a) for a in ("min", "max", "step")] == ["0", "10", "any"]
    expect(form.locator("#hint-param-learning_rate")).to_contain_text("number > 0, ≤ 10 · SGD with momentum 0.9")

    form.locator("#task-select").select_option("diabetes-regression")  # another task, other fields
    assert shown_params(form) == ["epochs", "hidden", "lr", "batch_size", "weight_decay", "seed"]
    expect(param(form, "dataset")).to_have_count(0)
    expect(page.locator("#task-description")).to_contain_text("diabetes data")
    for name, value in [("epochs", "40"), ("hidden", "32"), ("lr", "0.01"), ("batch_size", "32"),
                        ("weight_decay", "0"), ("seed", "0")]:
        expect(param(form, name)).to_have_value(value)
    assert param(form, "epochs").get_attribute("max") == "10000"
    expect(form.locator("#job-name")).to_have_attribute("placeholder", "diabetes-regression")


def test_an_invalid_form_value_shows_the_apis_message_next_to_its_field(page: Page):
    form = open_form(page, "diabetes-regression")
    param(form, "epochs").fill("0")
    form.locator("button[type=submit]").click()
    expect(page.locator("#err-param-epochs")).to_have_text("params.epochs: 0 is less than the minimum of 1")
    assert param(form, "epochs").get_attribute("aria-invalid") == "true"
    expect(param(form, "epochs")).to_be_focused()

    param(form, "epochs").fill("5")
    param(form, "lr").fill("0")  # exclusive bound
    form.locator("button[type=submit]").click()
    expect(page.locator("#err-param-lr")).to_contain_text("params.lr: 0 is less than or equal to the minimum of 0")
    expect(page.locator("#err-param-epochs")).to_have_text("")
    assert param(form, "epochs").get_attribute("aria-invalid") is None

    form.locator("#task-select").select_option("mlp")  # a list item's error lands on its list
    param(form, "hidden_sizes").fill("64, lots")
    form.locator("button[type=submit]").click()
    expect(page.locator("#err-param-hidden_sizes")).to_have_text(
        "params.hidden_sizes.1: 'lots' is not of type 'integer'")
    param(form, "hidden_sizes").fill("64, 5000")
    form.locator("button[type=submit]").click()
    expect(page.locator("#err-param-hidden_sizes")).to_contain_text("params.hidden_sizes.1: 5000 is greater than")
    param(form, "hidden_sizes").fill("64")
    form.locator("#job-name").fill("   ")
    form.locator("button[type=submit]").click()  # a blank name is left out: not an error
    page.wait_for_url("**/jobs/*")
    assert db.session.query(TrainingJob).count() == 1  # only the valid one was created


def test_submitting_another_task_creates_a_job_with_the_typed_params(page: Page):
    form = open_form(page, "diabetes-regression")
    form.locator("#job-name").fill("diabetes from the form")
    typed = {"epochs": "3", "hidden": "8", "lr": "0.05", "batch_size": "16", "weight_decay": "0.001", "seed": "7"}
    for name, value in typed.items():
        param(form, name).fill(value)
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/training")) as sent:
        form.locator("button[type=submit]").click()
    assert sent.value.post_data_json == {"task": "diabetes-regression", "name": "diabetes from the form", "params": {
        "epochs": 3, "hidden": 8, "lr": 0.05, "batch_size": 16, "weight_decay": 0.001, "seed": 7}}
    page.wait_for_url("**/jobs/*")
    job = row(page.url.rsplit("/", 1)[1])
    assert (job.task, job.name, job.status) == ("diabetes-regression", "diabetes from the form", "queued")
    assert job.params == {"epochs": 3, "hidden": 8, "lr": 0.05, "batch_size": 16, "weight_decay": 0.001, "seed": 7}
    # no live worker offers it: the API's warning is shown on the job's page
    expect(page.locator("#action-message")).to_have_text(
        "no live worker offers task diabetes-regression right now; the job waits queued until one does")
    expect(page.locator("#job-task")).to_have_text("diabetes-regression")
    expect(page.locator("#params dd[data-param=lr]")).to_have_text("0.05")
    # not started: no total is known until the task says it (ctx.total_epochs), and none is guessed from params
    expect(page.locator("#progress")).to_contain_text("–")


def test_what_was_typed_survives_a_refresh_of_the_tasks(page: Page):
    """The open form re-reads GET /api/tasks (live workers change); the same schema, in whatever key order the
    answer has it, keeps the fields and what was typed in them."""
    held = []  # the read the opening starts, held until the fields are filled
    page.route("**/api/tasks", lambda route: held.append(route))
    page.goto("/")
    with page.expect_request("**/api/tasks"):
        page.locator("#submit-panel summary").click()
    form = page.locator("#submit-form")
    form.locator("#task-select").select_option("diabetes-regression")
    param(form, "epochs").fill("7")
    param(form, "lr").fill("0.2")
    assert len(held) == 1
    held[0].continue_()
    expect(form).to_have_attribute("data-tasks-read", "1")
    expect(param(form, "epochs")).to_have_value("7")
    expect(param(form, "lr")).to_have_value("0.2")


def test_the_form_handles_every_kind_of_param(page: Page):
    """A task with booleans, optional values, a $ref enum, a list of floats and strings: the kinds a user's
    pydantic model makes. Published as a worker would; no worker runs it (the job just waits queued)."""
    schema = KindsParams.model_json_schema()
    catalogue.publish("kinds-publisher", [{"name": "kinds", "description": "Every kind of param.",
                                       "params_schema": schema, "code_version": "1", "module": "tests"}])
    try:
        form = open_form(page, "kinds")
        assert shown_params(form) == ["flag", "colour", "limit", "dropout", "rates", "label", "layers"]
        assert param(form, "flag").get_attribute("type") == "checkbox" and param(form, "flag").is_checked()
        assert param(form, "colour").locator("option").all_text_contents() == ["red", "green"]
        expect(param(form, "colour")).to_have_value('"green"')
        expect(param(form, "limit")).to_have_value("")  # Optional[int] = None
        expect(param(form, "rates")).to_have_value("0.1, 0.5")
        expect(param(form, "label")).to_have_value("run")
        assert param(form, "dropout").locator("option").all_text_contents() == ["(none)", "0", "0.5"]
        param(form, "flag").uncheck()
        param(form, "colour").select_option(label="red")
        param(form, "rates").fill("0.2, 1e-3,3")
        param(form, "label").fill("  spaced  ")
        param(form, "layers").fill("")
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/training")) as sent:
            form.locator("button[type=submit]").click()
        expect(page.locator("#err-param-layers")).to_contain_text("params.layers")  # [] is too short
        assert sent.value.post_data_json["params"] == {"flag": False, "colour": "red", "limit": None, "dropout": None,
                                                       "rates": [0.2, 0.001, 3], "label": "  spaced  ", "layers": []}
        param(form, "layers").fill("a, b")
        param(form, "limit").fill("7")
        form.locator("button[type=submit]").click()
        page.wait_for_url("**/jobs/*")
        job = row(page.url.rsplit("/", 1)[1])
        assert job.params == {"flag": False, "colour": "red", "limit": 7, "dropout": None, "rates": [0.2, 0.001, 3],
                              "label": "  spaced  ", "layers": ["a", "b"]}
    finally:
        db.session.execute(delete(TaskOffer).where(TaskOffer.worker_name == "kinds-publisher"))
        db.session.commit()


def test_a_running_jobs_page_shows_its_log_lines_as_they_come(page: Page, client, workers):
    workers()
    job_id = submit(client, LONG)
    page.goto(f"/jobs/{job_id}")
    mark_no_reload(page)
    log = page.locator("#log")
    expect(log).to_contain_text(f"job {job_id}: running (attempt 1")
    expect(log).to_contain_text("epoch 1/100000: train_loss", timeout=30_000)
    expect(log).to_contain_text("epoch 5/100000: train_loss", timeout=60_000)
    assert row(job_id).status == "running"  # the lines came while it trained
    assert_not_reloaded(page)
    numbers = log.locator(".log-line").evaluate_all("lines => lines.map(l => Number(l.dataset.n))")
    assert numbers == list(range(1, len(numbers) + 1))  # each line once, in order


def test_cancel_from_the_page_kills_the_training_processes(page: Page, client, workers):
    workers()
    job_id = submit(client, {**LONG, "num_workers": 2})
    job = wait_training(job_id)
    horse = psutil.Process(job.worker_pid)
    pids = [horse.pid] + [c.pid for c in wait_for(lambda: horse.children(recursive=True), 30, "loader processes")]
    page.goto(f"/jobs/{job_id}")
    expect(badge(page)).to_have_text("running")
    assert shown_actions(page) == ["cancel", "pause", "mark-failed"]

    page.locator("#actions button[data-action=cancel]").click()
    expect(page.locator("#cancel-dialog")).to_be_visible()
    with page.expect_response(lambda r: r.request.method == "DELETE") as answered:
        page.locator("#cancel-dialog button[value=confirm]").click()
    assert answered.value.status == 200
    expect(badge(page)).to_have_text("cancelled", timeout=1_000)  # fetched at once, not at the next poll
    expect(page.locator("#action-message")).to_have_text(f"Job {job_id} cancelled successfully")
    # the log says who stopped it and why (issue 23, item 17): it never just ends
    expect(page.locator("#log .log-line").last).to_contain_text(
        f"job {job_id}: cancelled by {client.get(f'/api/training/{job_id}').get_json()['owner']} (api): "
        "cancelled by user; its training was stopped")
    wait_for(lambda: all(process_gone(p) for p in pids), 5, f"horse and loader processes {pids} to be gone")
    expect(page.locator("#actions button")).to_have_count(1)  # a cancelled job without checkpoint: start afresh
    assert shown_actions(page) == ["force-start"]
    expect(page.locator("#actions button")).to_have_text("Start again from scratch")


def test_a_sigkilled_worker_turns_the_page_stale_then_failed(page: Page, client, workers, reconcilers):
    worker = workers()
    job_id = submit(client, LONG)
    wait_training(job_id)
    page.goto(f"/jobs/{job_id}")
    expect(badge(page)).to_have_text("running")
    mark_no_reload(page)

    worker.kill()  # the horse dies with it (PR_SET_PDEATHSIG)
    expect(page.locator("#stale-badge .badge")).to_have_text("stale", timeout=30_000)
    assert row(job_id).status == "running"  # stale is what the page sees before anyone decides
    reconcilers(**{"HEARTBEAT_TIMEOUT": "4"})  # the reconciler decides: worker lost
    expect(badge(page)).to_have_text("failed", timeout=30_000)
    expect(page.locator("#status-reason")).to_contain_text("worker lost")
    expect(page.locator("#stale-badge .badge")).to_have_count(0)
    expect(page.locator("#timeline")).to_contain_text("reconciler")
    assert_not_reloaded(page)
    assert shown_actions(page) == ["force-start"]


def test_pause_then_resume_from_the_page_continues_from_the_checkpoint(page: Page, client, workers):
    workers()
    job_id = submit(client, LONG)
    page.goto(f"/jobs/{job_id}")
    mark_no_reload(page)
    wait_for(lambda: row(job_id).epoch >= 1, 60, "a first epoch")
    expect(badge(page)).to_have_text("running")

    page.locator("#actions button[data-action=pause]").click()
    expect(badge(page)).to_have_text("paused", timeout=30_000)
    paused = row(job_id)
    expect(page.locator("#checkpoints")).to_contain_text("resume point")
    assert shown_actions(page) == ["cancel", "resume", "mark-failed"]

    page.locator("#actions button[data-action=resume]").click()
    expect(page.locator("#action-message")).to_contain_text("resumes from")
    wait_for(lambda: (j := row(job_id)).attempts == 2 and j.status == "running" and j.step > paused.step, 60,
             "the second attempt to train on")
    expect(badge(page)).to_have_text("running")
    expect(page.locator("#log")).to_contain_text(f"restoring {Path(paused.resume_from).name}")
    expect(page.locator("#log")).to_contain_text("resumed at epoch ")
    assert row(job_id).epoch >= paused.epoch  # continued from the checkpoint's epoch, not from zero
    # the refresh after Resume raced the regular poll: each line is shown once all the same (issue 23, item 9)
    numbers = page.locator("#log .log-line").evaluate_all("lines => lines.map(l => Number(l.dataset.n))")
    assert numbers == list(range(1, len(numbers) + 1))
    expect(page.locator("#runs li")).to_have_count(2)  # both runs, the first ended paused (item 11)
    expect(page.locator("#runs li").first).to_contain_text("→ paused")
    assert_not_reloaded(page)


def test_a_refused_action_shows_the_apis_message(page: Page, client):
    job_id = submit(client, LONG)  # no worker: it stays queued
    page.goto(f"/jobs/{job_id}")
    expect(badge(page)).to_have_text("queued")
    assert shown_actions(page) == ["cancel", "force-start", "mark-failed"]  # the stuck-queued recovery card

    page.locator("#actions button[data-action=mark-failed]").click()
    page.locator("#fail-reason").fill("stuck behind a dead host")
    assert client.delete(f"/api/training/{job_id}").status_code == 200  # someone else cancels it meanwhile
    page.locator("#fail-dialog button[value=confirm]").click()
    expect(page.locator("#action-message")).to_have_text(
        f"job {job_id} is already cancelled and cannot be marked failed")
    expect(page.locator("#action-message")).to_have_class("error")
    expect(badge(page)).to_have_text("cancelled")
    expect(page.locator("#actions button")).to_have_count(1)
    assert shown_actions(page) == ["force-start"]
    assert wait_status(job_id, "cancelled").status_reason == "cancelled by user"


def test_the_jobs_list_updates_live_and_filters(page: Page, client):
    first = submit(client, LONG, name="first")
    page.goto("/")
    mark_no_reload(page)
    expect(page.locator("#job-rows tr")).to_have_count(1)
    second = submit(client, LONG, name="second")
    expect(page.locator("#job-rows tr")).to_have_count(2)
    expect(page.locator("#job-rows tr").first).to_have_attribute("data-job-id", second)  # newest first
    client.delete(f"/api/training/{first}")
    expect(page.locator(f"tr[data-job-id='{first}'] .badge")).to_have_text("cancelled")
    page.locator("#status-filter").select_option("queued")
    expect(page.locator("#job-rows tr")).to_have_count(1)
    expect(page.locator("#job-rows tr")).to_have_attribute("data-job-id", second)
    assert page.url.endswith("/?status=queued")
    assert_not_reloaded(page)


def submit_task(client, task: str, params: dict, name: str = "t") -> str:
    response = client.post("/api/training", json={"task": task, "params": params, "name": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]["id"]


def test_the_jobs_list_shows_each_jobs_task_and_filters_by_it(page: Page, client):
    mlp = submit(client, LONG, name="an mlp")
    diabetes = submit_task(client, "diabetes-regression", {"epochs": 5}, name="a regression")
    page.goto("/")
    mark_no_reload(page)
    expect(page.locator("#job-rows tr")).to_have_count(2)
    expect(page.locator(f"tr[data-job-id='{mlp}'] td.task")).to_have_text("mlp")
    expect(page.locator(f"tr[data-job-id='{diabetes}'] td.task")).to_have_text("diabetes-regression")
    expect(page.locator(f"tr[data-job-id='{diabetes}'] td[data-label=Progress]")).to_contain_text("–")

    page.locator("#sort-order").select_option("-")  # no metric typed: the list's order stays
    page.locator("#task-filter").select_option("diabetes-regression")
    # its declared primary metric (val_mse, lower is better) is the sort offered first, not applied by itself
    expect(page.locator("#sort-metric")).to_have_attribute("placeholder", "e.g. val_mse")
    expect(page.locator("#sort-order")).to_have_value("")
    expect(page.locator("#job-rows tr")).to_have_count(1)
    expect(page.locator("#job-rows tr")).to_have_attribute("data-job-id", diabetes)
    assert page.url.endswith("/?task=diabetes-regression")
    later = submit_task(client, "diabetes-regression", {"epochs": 6}, name="another regression")
    submit(client, LONG, name="another mlp")  # live, and still filtered
    expect(page.locator("#job-rows tr")).to_have_count(2)
    expect(page.locator("#job-rows tr").first).to_have_attribute("data-job-id", later)

    client.delete(f"/api/training/{diabetes}")
    page.locator("#status-filter").select_option("cancelled")  # both filters at once
    expect(page.locator("#job-rows tr")).to_have_count(1)
    expect(page.locator("#job-rows tr")).to_have_attribute("data-job-id", diabetes)
    assert page.url.endswith("/?status=cancelled&task=diabetes-regression")
    page.locator("#task-filter").select_option("mlp")
    expect(page.locator("#empty")).to_have_text("No mlp jobs with status cancelled yet.")
    expect(page.locator("#job-rows tr")).to_have_count(0)
    assert_not_reloaded(page)

    page.goto("/?task=mlp")  # the filter is in the URL: a reload (or a link) keeps it
    expect(page.locator("#task-filter")).to_have_value("mlp")
    expect(page.locator("#job-rows tr")).to_have_count(2)
    assert set(page.locator("#job-rows tr").evaluate_all("rows => rows.map(r => r.dataset.task)")) == {"mlp"}


def test_a_finished_jobs_page_draws_every_metric_and_links_its_artifact(page: Page, client, workers, tmp_path):
    workers()
    job_id = submit_task(client, "diabetes-regression", {"epochs": 6, "hidden": 8, "seed": 3}, name="curves")
    wait_status(job_id, "completed", timeout=120)
    page.goto(f"/jobs/{job_id}")
    charts = page.locator("#charts .chart")
    expect(charts).to_have_count(3)  # one chart per metric the task reported, nothing else
    assert charts.evaluate_all("cs => cs.map(c => c.dataset.metric)") == ["train_mse", "val_mse", "val_r2"]
    for metric in ("train_mse", "val_mse", "val_r2"):
        chart = page.locator(f"#charts .chart[data-metric={metric}]")
        expect(chart).to_have_attribute("data-points", "6")
        expect(chart).to_have_attribute("data-axis", "epoch")
        expect(chart.locator(".u-title")).to_have_text(metric)
        expect(chart.locator("canvas")).to_be_visible()
    expect(page.locator("#curves-empty")).to_be_hidden()
    expect(page.locator("#metrics dd[data-metric=val_r2]")).not_to_have_text("–")
    expect(page.locator("#checkpoints")).to_contain_text("epoch 6")

    listed = client.get(f"/api/training/{job_id}/artifacts").get_json()["artifacts"]
    assert [a["name"] for a in listed] == ["model.pt"]
    item = page.locator("#artifacts li[data-artifact='model.pt']")
    expect(item).to_contain_text(f"sha256 {listed[0]['sha256'][:12]}")
    link = item.get_by_role("link", name="model.pt")
    expect(link).to_have_attribute("href", listed[0]["url"])
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "model.pt"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "model.pt"
    assert saved.stat().st_size == listed[0]["size"]
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == listed[0]["sha256"]

    page.set_viewport_size({"width": 375, "height": 800})  # the charts shrink to a phone's width
    wait_for(lambda: page.evaluate("document.documentElement.scrollWidth") <= 375, 5, "the page to fit 375 px")
    assert page.locator("#charts canvas").first.bounding_box()["width"] <= 375

    submit(client, LONG, name="a-queued-mlp-with-a-long-name")
    page.set_viewport_size({"width": 1280, "height": 900})  # the list with both tasks and metrics fits a desktop
    page.goto("/")
    expect(page.locator(f"tr[data-job-id='{job_id}']")).to_contain_text("val_r2")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280, "the list scrolls sideways at 1280 px"


def test_step_only_metrics_are_drawn_on_the_step_axis(page: Page, client):
    job_id = submit(client, LONG)
    history = [{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.5}, {"epoch": 1, "step": 25, "train_loss": 1.4,
               "val_accuracy": 0.5}, {"step": 30, "loss": None}, {"step": 40, "loss": 1.1},
               {"epoch": 2, "step": 50, "train_loss": 1.0, "val_accuracy": 0.75}]
    db.session.query(TrainingJob).filter_by(id=job_id).update({"history": history, "epoch": 2, "step": 50,
                                                                 "metrics": {"loss": 1.1, "val_accuracy": 0.75}})
    db.session.commit()
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#charts .chart")).to_have_count(3)
    loss = page.locator("#charts .chart[data-metric=loss]")
    expect(loss).to_have_attribute("data-axis", "step")
    expect(loss).to_have_attribute("data-points", "3")  # a null is a gap, not a point
    expect(page.locator("#charts .chart[data-metric=train_loss]")).to_have_attribute("data-axis", "epoch")
    expect(page.locator("#charts .chart[data-metric=val_accuracy]")).to_have_attribute("data-points", "2")
    expect(page.locator("#metrics dd[data-metric=val_accuracy]")).to_have_text("75.0 %")


def test_polls_that_find_nothing_changed_are_304s(page: Page, client):
    job_id = submit(client, LONG)
    client.delete(f"/api/training/{job_id}")
    page.goto(f"/jobs/{job_id}")
    expect(badge(page)).to_have_text("cancelled")
    with page.expect_response(lambda r: r.url.endswith(f"/api/training/{job_id}")):
        pass  # the page's first poll has no ETag yet (under load it may come after this line): let it pass
    for _ in range(3):
        with page.expect_response(lambda r: r.url.endswith(f"/api/training/{job_id}")) as polled:
            pass
        assert polled.value.status == 304 and polled.value.request.headers["if-none-match"].startswith('W/"')


def test_both_pages_fit_a_375px_screen(page: Page, client):
    job_id = submit(client, LONG, name="a-rather-long-job-name-that-must-wrap-on-a-phone-screen")
    page.set_viewport_size({"width": 375, "height": 800})
    for path in ("/", f"/jobs/{job_id}"):
        page.goto(path)
        expect(page.locator(".badge").first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, f"{path} scrolls sideways at 375 px"
    for button in page.locator("#actions button").all():  # real buttons, with their words on them
        assert button.is_visible() and button.text_content().strip()
    open_form(page, "mlp")  # the generated form, open
    expect(page.locator("#param-hidden_sizes")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, "the form scrolls sideways at 375 px"
