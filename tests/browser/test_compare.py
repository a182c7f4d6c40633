"""Issue #14 in the browser: select jobs on the list -> the compare page (a line per job in every chart, the
differing params, the best final metrics, live lines); filters narrow the list; Run again -> submit -> a new job
with the edited params that links back; the history downloads as CSV."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, update

from api.record.status import Actor, JobStatus, utcnow
from api.record.status_writer import transition
from api.record.tables import TrainingJob
from api.stores import db
from tests.support import LONG, row, submit

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def set_row(job_id: str, **values) -> None:
    """Write columns as a worker's progress write does: ``updated_at`` with them (the read's ETag is the row's
    version, all but its history)."""
    db.session.execute(update(TrainingJob).where(TrainingJob.id == uuid.UUID(job_id))
                       .values(updated_at=func.now(), **values))
    db.session.commit()


def history(epochs: int, scale: float) -> list[dict]:
    return [{"epoch": e, "step": e * 10, "train_loss": scale / e, "val_loss": scale * 1.1 / e,
             "val_accuracy": 1 - scale / (e + 1)} for e in range(1, epochs + 1)]


def finish(job_id: str, epochs: int, scale: float) -> None:
    entries = history(epochs, scale)
    set_row(job_id, history=entries, metrics={k: v for k, v in entries[-1].items() if k not in ("epoch", "step")})
    transition(job_id, JobStatus.RUNNING, reason="test", actor=Actor.WORKER)
    transition(job_id, JobStatus.COMPLETED, reason="test", actor=Actor.WORKER)


def rows_shown(page: Page) -> list[str]:
    return page.locator("#job-rows tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")


@pytest.fixture
def three_runs(client) -> list[str]:
    """Three runs of the same model with a different learning rate; the third is still going (queued here, its
    history written as a worker's progress writes would)."""
    ids = [submit(client, {**LONG, "epochs": 8, "learning_rate": lr}, name=f"lr {lr}") for lr in (0.1, 0.01, 0.001)]
    finish(ids[0], 8, 2.0)
    finish(ids[1], 8, 1.0)
    set_row(ids[2], history=history(3, 1.5), metrics={"val_loss": 1.5 * 1.1 / 3})
    return ids


def test_select_three_jobs_and_compare_them(page: Page, three_runs):
    first, second, third = three_runs
    page.goto("/")
    expect(page.locator("#job-rows tr")).to_have_count(3)
    expect(page.locator("#compare-link")).to_have_attribute("aria-disabled", "true")
    for job_id in (first, second, third):
        page.locator(f"tr[data-job-id='{job_id}'] .select-job").check()
    expect(page.locator("#selected-count")).to_contain_text("3 selected")
    page.locator("#compare-link").click()
    page.wait_for_url(f"**/compare?ids={first},{second},{third}")

    expect(page.locator("#legend li")).to_have_count(3)
    for metric in ("train_loss", "val_loss", "val_accuracy"):
        chart = page.locator(f"#charts .chart[data-metric={metric}]")
        expect(chart).to_have_attribute("data-lines", "3")
        expect(chart).to_have_attribute("data-axis", "epoch")
        for name in ("lr 0.1", "lr 0.01", "lr 0.001"):  # uPlot's legend names each line's job
            expect(chart.locator(".u-legend")).to_contain_text(name)
    expect(page.locator("#charts .chart[data-metric=val_loss]")).to_have_attribute("data-points", "19")

    params = page.locator("#params-table")
    expect(params.locator("tr.differs")).to_have_count(1)
    expect(params.locator("tr.differs")).to_have_attribute("data-param", "learning_rate")
    expect(params.locator("tr[data-param=epochs]")).to_have_class("same")
    expect(params.locator("tr[data-param=seed]")).to_be_visible()
    page.locator("#hide-equal").check()
    expect(params.locator("tr[data-param=seed]")).to_be_hidden()
    expect(params.locator("tr[data-param=learning_rate]")).to_be_visible()

    final = page.locator("#final-metrics")  # lowest loss, highest accuracy
    expect(final.locator(f"tr[data-metric=val_loss] td[data-job-id='{second}']")).to_have_class("best")
    expect(final.locator(f"tr[data-metric=val_accuracy] td[data-job-id='{second}']")).to_have_class("best")
    expect(final.locator("td.best")).to_have_count(3)

    page.locator("#log-scale").check()
    page.locator("#axis").select_option("step")
    expect(page.locator("#charts .chart[data-metric=val_loss]")).to_have_attribute("data-axis", "step")
    expect(page.locator("#charts .chart[data-metric=val_loss]")).to_have_attribute("data-lines", "3")
    assert "log=1" in page.url and "axis=step" in page.url and "hide_equal=1" in page.url

    set_row(third, history=history(6, 1.5))  # the live job reports three more epochs: its line grows
    expect(page.locator("#charts .chart[data-metric=val_loss]")).to_have_attribute("data-points", "22")

    page.goto(page.url)  # the URL is the view: share it, reload it
    expect(page.locator("#axis")).to_have_value("step")
    expect(page.locator("#log-scale")).to_be_checked()
    expect(params.locator("tr[data-param=seed]")).to_be_hidden()

    page.set_viewport_size({"width": 375, "height": 800})  # readable on a phone: nothing wider than the screen
    expect(page.locator("#charts .chart[data-metric=val_loss]")).to_have_attribute("data-lines", "3")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_filters_narrow_the_list_and_a_selection_outlives_them(page: Page, client, make_user):
    user, alice, _ = make_user("alice")
    ids = {name: submit(client, LONG, name=name) for name in ("resnet-a", "resnet-b", "mlp-c")}
    ids["resnet-alice"] = submit(alice, LONG, name="resnet-alice")
    alice_name = user.name
    set_row(ids["mlp-c"], created_at=utcnow() - timedelta(days=10))
    for name, loss in (("resnet-a", 0.4), ("resnet-b", 0.2), ("resnet-alice", 0.3)):
        set_row(ids[name], metrics={"val_loss": loss})
    page.goto("/")
    expect(page.locator("#job-rows tr")).to_have_count(4)

    page.locator("#name-filter").fill("RESNET")
    expect(page.locator("#job-rows tr")).to_have_count(3)
    assert "name=RESNET" in page.url
    page.locator(f"tr[data-job-id='{ids['resnet-a']}'] .select-job").check()
    page.locator("#owner-filter").fill(alice_name)
    expect(page.locator("#job-rows tr")).to_have_count(1)
    page.locator(f"tr[data-job-id='{ids['resnet-alice']}'] .select-job").check()
    expect(page.locator("#selected-count")).to_contain_text("2 selected: resnet-a, resnet-alice")
    expect(page.locator("#compare-link")).to_have_attribute(
        "href", f"/compare?ids={ids['resnet-a']},{ids['resnet-alice']}")

    page.locator("#clear-filters").click()
    expect(page.locator("#job-rows tr")).to_have_count(4)
    page.locator("#until-filter").fill((utcnow() - timedelta(days=5)).date().isoformat())
    expect(page.locator("#job-rows tr")).to_have_count(1)
    assert rows_shown(page) == [ids["mlp-c"]]
    page.locator("#since-filter").fill((utcnow() - timedelta(days=5)).date().isoformat())
    expect(page.locator("#job-rows tr")).to_have_count(0)
    expect(page.locator("#empty")).to_have_text("No jobs match these filters.")

    page.locator("#clear-filters").click()
    page.locator("#sort-metric").fill("val_loss")  # best first; the job without it is left out
    expect(page.locator("#job-rows tr")).to_have_count(3)
    assert rows_shown(page) == [ids["resnet-b"], ids["resnet-alice"], ids["resnet-a"]]
    page.locator("#sort-order").select_option("-")
    expect(page.locator("#job-rows tr").first).to_have_attribute("data-job-id", ids["resnet-a"])
    assert rows_shown(page) == [ids["resnet-a"], ids["resnet-alice"], ids["resnet-b"]]
    assert "sort=-val_loss" in page.url
    page.goto(page.url)  # kept in the URL
    expect(page.locator("#sort-metric")).to_have_value("val_loss")
    expect(page.locator("#job-rows tr").first).to_have_attribute("data-job-id", ids["resnet-a"])
    expect(page.locator("#selected-count")).to_contain_text("2 selected")  # and the selection with the tab


def test_run_again_fills_the_form_then_the_new_job_links_back(page: Page, client):
    source = submit(client, {**LONG, "epochs": 9, "hidden_sizes": [32, 16], "learning_rate": 0.05}, name="baseline")
    set_row(source, history=history(2, 1.0))
    page.goto(f"/jobs/{source}")
    with page.expect_download() as download:  # the history, as CSV
        page.locator("#export-csv").click()
    rows = list(csv.reader(io.StringIO(open(download.value.path()).read())))
    assert rows[0] == ["epoch", "step", "train_loss", "val_accuracy", "val_loss"] and len(rows) == 3
    assert download.value.suggested_filename == f"baseline-{source[:8]}-history.csv"

    page.locator("#run-again").click()
    page.wait_for_url(f"**/?clone={source}")
    form = page.locator("#submit-form")
    expect(page.locator("#submit-panel")).to_have_attribute("open", "")
    expect(page.locator("#clone-note")).to_contain_text("Running again baseline")
    expect(form.locator("#task-select")).to_have_value("mlp")
    expect(form.locator("#param-epochs")).to_have_value("9")
    expect(form.locator("#param-hidden_sizes")).to_have_value("32, 16")
    expect(form.locator("#param-learning_rate")).to_have_value("0.05")
    expect(form.locator("#job-name")).to_have_value("baseline")
    form.locator("#param-epochs").fill("12")
    form.locator("#job-name").fill("baseline, longer")
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/jobs/*")
    new_id = page.url.rsplit("/", 1)[1]
    assert new_id != source
    job = row(new_id)
    assert job.params["epochs"] == 12 and job.params["hidden_sizes"] == [32, 16] and job.params["learning_rate"] == 0.05
    assert str(job.cloned_from) == source and job.name == "baseline, longer"
    link = page.locator("#cloned-from a")
    expect(link).to_have_text("baseline")
    link.click()
    page.wait_for_url(f"**/jobs/{source}")
