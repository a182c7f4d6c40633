"""The monitor as a user drives it: Chromium on the real stack (see conftest). Every wait has a deadline;
"without reload" is checked with a marker set on ``window`` that a reload would wipe."""

from __future__ import annotations

import psutil
import pytest
from playwright.sync_api import Page, expect

from api.extensions import db
from api.models import TrainingJob
from tests.support import LONG, process_gone, row, submit, wait_for, wait_status, wait_training

pytestmark = [pytest.mark.browser, pytest.mark.e2e]



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


def test_submit_from_the_form_then_watch_it_train_to_completion(page: Page, workers):
    workers()
    page.goto("/")
    page.locator("#submit-panel summary").click()
    form = page.locator("#submit-form")
    form.locator("[name=name]").fill("from the form")
    # 20 epochs of batch 2: several seconds here, so the page polls it many times while it trains
    for field, value in [("hidden_sizes", "32"), ("epochs", "20"), ("batch_size", "2"), ("checkpoint_every", "5"),
                         ("seed", "2")]:
        form.locator(f"[name={field}]").fill(value)
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/jobs/*")
    mark_no_reload(page)
    job_id = page.url.rsplit("/", 1)[1]
    assert row(job_id).name == "from the form" and row(job_id).config["batch_size"] == 2

    seen_progress, seen_points = set(), set()

    def watch() -> bool:
        seen_progress.add(progress_value(page))
        seen_points.add(int(page.locator("#curves-title").get_attribute("data-points") or 0))
        return badge(page).text_content() == "completed"

    wait_for(watch, 90, "the page to show completed")
    assert_not_reloaded(page)
    assert len(seen_progress - {0, 20}) >= 1 and len(seen_points) >= 3, (seen_progress, seen_points)
    expect(page.locator("#progress")).to_contain_text("epoch 20 of 20")
    expect(page.locator("#curves-title")).to_have_attribute("data-points", "20")
    assert shown_actions(page) == []  # nothing to do to a completed job
    expect(page.locator("#timeline li")).to_have_count(3)
    expect(page.locator("#checkpoints")).to_contain_text("epoch 20")


def test_an_invalid_form_value_shows_the_apis_message_next_to_its_field(page: Page):
    page.goto("/")
    page.locator("#submit-panel summary").click()
    form = page.locator("#submit-form")
    form.locator("[name=epochs]").fill("0")
    form.locator("button[type=submit]").click()
    expect(page.locator("#err-epochs")).to_have_text("config.epochs: must be between 1 and 100000, got 0")
    assert form.locator("[name=epochs]").get_attribute("aria-invalid") == "true"

    form.locator("[name=epochs]").fill("5")
    form.locator("[name=hidden_sizes]").fill("64, lots")
    form.locator("button[type=submit]").click()
    expect(page.locator("#err-hidden_sizes")).to_contain_text("each size must be an integer 1..4096, got 'lots'")
    expect(page.locator("#err-epochs")).to_have_text("")
    assert page.url.endswith("/")
    assert db.session.query(TrainingJob).count() == 0  # nothing was submitted


def test_a_running_jobs_page_shows_its_log_lines_as_they_come(page: Page, client, workers):
    workers()
    job_id = submit(client, LONG)
    page.goto(f"/jobs/{job_id}")
    mark_no_reload(page)
    log = page.locator("#log")
    expect(log).to_contain_text(f"job {job_id}: running (attempt 1")
    expect(log).to_contain_text("epoch 1/100000: train_loss")
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
    expect(page.locator("#log")).to_contain_text(f"resumed from {paused.resume_from} at epoch ")
    assert row(job_id).epoch >= paused.epoch  # continued from the checkpoint's epoch, not from zero
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


def test_polls_that_find_nothing_changed_are_304s(page: Page, client):
    job_id = submit(client, LONG)
    client.delete(f"/api/training/{job_id}")
    page.goto(f"/jobs/{job_id}")
    expect(badge(page)).to_have_text("cancelled")
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
