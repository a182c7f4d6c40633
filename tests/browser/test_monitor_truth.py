"""The monitor's small lies, fixed (issue 23, items 8-18), each in Chromium on the real stack (see conftest). Rows
are written as a worker's progress writes would write them, so each page shows a known state."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, update

from api.record.status import Actor, JobStatus
from api.record.status_writer import transition
from api.record.tables import JobLogLine, TrainingJob
from api.stores import db
from tests.support import LONG, submit, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def set_row(job_id: str, **values) -> None:
    db.session.execute(update(TrainingJob).where(TrainingJob.id == uuid.UUID(job_id))
                       .values(updated_at=func.now(), **values))
    db.session.commit()


def end(job_id: str, status: JobStatus) -> None:
    transition(job_id, JobStatus.RUNNING, reason="started by worker w1 (attempt 1)", actor=Actor.WORKER)
    transition(job_id, status, reason="test", actor=Actor.WORKER)


PROVENANCE = {"attempt": 1, "code_version": "0123456789abcdef", "module": "builtin_tasks.tasks", "package": "trainq",
              "package_version": "0.1.0", "git_commit": "a" * 40, "git_dirty": False, "python": "3.11.7",
              "torch": "2.13.0+cpu", "cuda": None, "gpu_driver": None, "hostname": "box"}


def test_nan_and_infinities_are_shown_and_marked_on_the_curve(page: Page, client):
    job_id = submit(client, LONG)
    history = [{"epoch": 1, "step": 10, "loss": 2.0}, {"epoch": 2, "step": 20, "loss": 1.5},
               {"epoch": 3, "step": 30, "loss": "NaN"}, {"epoch": 4, "step": 40, "loss": "Infinity"}]
    set_row(job_id, history=history, epoch=4, step=40, metrics={"loss": "NaN", "val_loss": "-Infinity"})
    end(job_id, JobStatus.COMPLETED)
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#metrics dd[data-metric=loss]")).to_have_text("NaN")  # never "–": it diverged
    expect(page.locator("#metrics dd[data-metric=val_loss]")).to_have_text("-Infinity")
    expect(page.locator("#metrics dd[data-metric=loss]")).to_have_class("nonfinite")
    chart = page.locator("#charts .chart[data-metric=loss]")
    expect(chart).to_have_attribute("data-points", "2")  # the line has the finite points
    expect(chart).to_have_attribute("data-nonfinite", "2")  # and a marker where it stops
    expect(chart.locator(".chart-note")).to_have_text("loss became NaN at epoch 3 (2 points not finite)")
    expect(chart.locator(".u-legend")).to_contain_text("not finite")
    page.goto(f"/compare?ids={job_id}")  # the compare page says where each job's line stops
    chart = page.locator("#charts .chart[data-metric=loss]")
    expect(chart).to_have_attribute("data-nonfinite", "2")
    expect(chart.locator(f".chart-note li[data-job-id='{job_id}']")).to_have_text("t: loss became NaN at epoch 3")
    expect(page.locator("#final-metrics tr[data-metric=loss] td")).to_have_text("NaN")


def test_a_queued_jobs_log_says_it_waits_to_start(page: Page, client):
    job_id = submit(client, LONG)  # no worker: it stays queued
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#log-note")).to_have_text("waiting to start: the log begins when a worker takes it")
    db.session.add(JobLogLine(job_id=uuid.UUID(job_id), n=1, attempt=1, line="a first line"))
    db.session.commit()
    set_row(job_id, step=1)  # the job changed: the page reads its log again
    expect(page.locator("#log .log-line")).to_have_text("a first line")
    expect(page.locator("#log-note")).to_have_count(0)


def test_a_job_that_is_not_running_shows_no_heartbeat(page: Page, client):
    job_id = submit(client, LONG)
    end(job_id, JobStatus.CANCELLED)
    set_row(job_id, heartbeat_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 5))
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#status-badge .badge")).to_have_text("cancelled")
    expect(page.locator("#d-heartbeat")).to_have_text("–")
    page.goto("/")
    expect(page.locator(f"tr[data-job-id='{job_id}'] .heartbeat")).to_have_text("–")


def test_a_paused_job_shows_the_step_it_will_resume_from(page: Page, client):
    job_id = submit(client, LONG)
    set_row(job_id, step=422, epoch=4, total_steps=1000,
            resume_from=f"/var/checkpoints/{job_id}/ckpt-000003-e3-s395.pt")
    transition(job_id, JobStatus.RUNNING, reason="started by worker w1 (attempt 1)", actor=Actor.WORKER)
    transition(job_id, JobStatus.PAUSED, reason="paused at checkpoint ckpt-000003-e3-s395.pt", actor=Actor.WORKER)
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#progress")).to_contain_text("resumes from step 395 of 1000")
    assert page.locator("#progress progress").get_attribute("value") == "395"  # not 422, where it stopped
    page.goto("/")
    expect(page.locator(f"tr[data-job-id='{job_id}']")).to_contain_text("resumes from step 395 of 1000")


def test_started_and_training_time_cover_every_run_and_the_runs_are_listed(page: Page, client):
    job_id = submit(client, LONG)
    transition(job_id, JobStatus.RUNNING, reason="started by worker w1 (attempt 1)", actor=Actor.WORKER)
    db.session.execute(update(TrainingJob).where(TrainingJob.id == uuid.UUID(job_id))
                       .values(resume_from=f"/c/{job_id}/ckpt-000001-s5.pt"))
    db.session.commit()
    transition(job_id, JobStatus.PAUSED, reason="paused", actor=Actor.WORKER)
    transition(job_id, JobStatus.QUEUED, reason="resumed", actor=Actor.API, fields={"attempts": 2})
    transition(job_id, JobStatus.RUNNING, reason="started by worker w2 (attempt 2)", actor=Actor.WORKER, attempt=2)
    transition(job_id, JobStatus.COMPLETED, reason="training finished", actor=Actor.WORKER, attempt=2)
    job = client.get(f"/api/training/{job_id}").get_json()
    page.goto(f"/jobs/{job_id}")
    runs = page.locator("#runs li")
    expect(runs).to_have_count(2)
    expect(runs.nth(0)).to_contain_text("attempt 1")
    expect(runs.nth(0)).to_contain_text("→ paused")
    expect(runs.nth(0)).to_contain_text("w1")
    expect(runs.nth(1)).to_contain_text("→ completed")
    shown = page.evaluate("iso => new Date(iso).toLocaleString()", job["first_started_at"])
    expect(page.locator("#d-started")).to_have_text(shown)  # the first start, not the newest attempt's
    assert job["first_started_at"] != job["started_at"]
    expect(page.locator("#d-duration")).to_have_text(re.compile(r"^\d\.\d s$"))  # its runs took ms: not "0 s"
    page.goto("/")  # the list too: the first start, and the time over both runs
    expect(page.locator(f"tr[data-job-id='{job_id}'] .started")).to_have_text(shown)
    listed = client.get("/api/training").get_json()["jobs"][0]
    assert listed["first_started_at"] == job["first_started_at"]
    assert abs(listed["ended_runs_seconds"] - job["training_seconds"]) < 0.01


def test_the_compare_page_stars_only_completed_jobs_and_marks_the_others_partial(page: Page, client):
    done, stopped = submit(client, LONG, name="done"), submit(client, LONG, name="stopped")
    set_row(done, metrics={"val_loss": 0.5}, provenance=PROVENANCE)
    set_row(stopped, metrics={"val_loss": 0.1}, provenance={**PROVENANCE, "code_version": "fedcba9876543210"})
    end(done, JobStatus.COMPLETED)
    end(stopped, JobStatus.CANCELLED)  # its lower loss is from a run cut short
    page.goto(f"/compare?ids={done},{stopped}")
    row = page.locator("#final-metrics tr[data-metric=val_loss]")
    expect(row.locator(f"td[data-job-id='{done}']")).to_have_class("best")
    expect(row.locator(f"td[data-job-id='{done}']")).to_contain_text("★")
    expect(row.locator(f"td[data-job-id='{stopped}']")).to_contain_text("(partial)")
    expect(row.locator(f"td[data-job-id='{stopped}']")).not_to_contain_text("★")
    code = page.locator("#provenance-table tr[data-field=code_version]")  # item 8: highlighted as a param is
    expect(code).to_have_class("differs")
    expect(code.locator(f"td[data-job-id='{stopped}']")).to_have_text("fedcba9876543210")
    expect(page.locator("#provenance-table tr[data-field=torch]")).to_have_class("same")


def test_the_job_page_shows_what_ran_it(page: Page, client):
    job_id = submit(client, LONG)
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#provenance")).to_contain_text("not yet")
    set_row(job_id, provenance={**PROVENANCE, "git_dirty": True, "cuda": "12.4", "gpu_driver": "550.54.15"})
    expect(page.locator("#prov-code_version")).to_have_text("0123456789abcdef")
    expect(page.locator("#prov-git_commit")).to_have_text("aaaaaaaaaaaa (dirty)")
    expect(page.locator("#prov-package")).to_have_text("trainq 0.1.0")
    expect(page.locator("#prov-cuda")).to_have_text("12.4")
    expect(page.locator("#prov-gpu_driver")).to_have_text("550.54.15")


def test_y_axis_labels_are_as_precise_as_the_tick_step(page: Page, client):
    job_id = submit(client, LONG)
    history = [{"epoch": e, "loss": 0.0105 + e * 0.0001} for e in range(1, 11)]
    set_row(job_id, history=history, epoch=10, metrics={"loss": history[-1]["loss"]})
    end(job_id, JobStatus.COMPLETED)
    for path, selector in ((f"/jobs/{job_id}", "#charts .chart[data-metric=loss] .uplot"),
                           (f"/compare?ids={job_id}", "#charts .chart[data-metric=loss] .uplot")):
        page.goto(path)
        chart = page.locator(selector)
        ticks = wait_for(lambda chart=chart: chart.get_attribute("data-y-ticks"), 15, "the y axis's labels").split("|")
        assert len(ticks) >= 2 and len(set(ticks)) == len(ticks), (path, ticks)  # never "0.011, 0.011"


def test_concurrent_refreshes_never_show_a_log_line_twice(page: Page, client):
    """After an action the page refreshes at once, while its regular poll may be in flight: the two read the log
    from the same cursor. Each line is shown once."""
    job_id = submit(client, LONG)
    db.session.add_all([JobLogLine(job_id=uuid.UUID(job_id), n=n, attempt=1, line=f"line {n}") for n in range(1, 41)])
    db.session.commit()
    end(job_id, JobStatus.CANCELLED)
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#log .log-line")).to_have_count(40)
    page.evaluate("""() => {
      document.getElementById("log").replaceChildren();
      state.logCursor = 0;
      state.logMore = true;
      refresh(); refresh(); refresh();
    }""")
    expect(page.locator("#log .log-line")).to_have_count(40)
    numbers = page.locator("#log .log-line").evaluate_all("lines => lines.map(l => Number(l.dataset.n))")
    assert numbers == list(range(1, 41))


def test_logged_out_the_docs_page_goes_to_the_login_page_and_back(browser_context, admin_token: str, anon):
    tab = browser_context()
    tab.goto("/docs")
    tab.wait_for_url("**/login?next=%2Fdocs")
    expect(tab.locator("#token")).to_be_visible()
    log_in_here = tab.locator("#token")
    log_in_here.fill(admin_token)
    log_in_here.press("Enter")
    tab.wait_for_url("**/docs")
    expect(tab.locator("h1")).to_contain_text("API")
    answer = anon.get("/api/openapi.json")  # an API client still gets the API's 401
    assert answer.status_code == 401 and answer.get_json()["error"]["code"] == "unauthorized"


def test_the_submit_form_can_ask_to_fail_on_nan(page: Page):
    page.goto("/")
    page.locator("#submit-panel summary").click()
    form = page.locator("#submit-form")
    form.locator("#task-select").select_option("diabetes-regression")
    expect(form).to_have_attribute("data-task", "diabetes-regression")
    form.locator("#fail-on-nan").check()
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/training")) as sent:
        form.locator("button[type=submit]").click()
    assert sent.value.post_data_json["fail_on_nan"] is True
    page.wait_for_url("**/jobs/*")
    assert db.session.get(TrainingJob, uuid.UUID(page.url.rsplit("/", 1)[1])).fail_on_nan is True
