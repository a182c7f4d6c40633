"""GPUs and resources in the monitor, in a real browser on the real stack with pretend GPUs (``--fake-gpus``): the
hosts page lists each live host, its GPUs and the job holding each (linked), its CPUs and memory, tasks and last
seen, live; the submit form sends GPUs, CPUs and memory as the job's ``resources``, shows the API's 422 on a
resource next to its field, and a job that waits for devices says why on the list and on its page."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from api import queue
from api.record.tables import TrainingJob
from api.stores import db
from tests.browser.test_monitor import assert_not_reloaded, mark_no_reload, open_form
from tests.support import wait_for, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
SAMPLE = {"TRAINQ_TASKS": "tests.task_modules.sample"}


def submit(client, resources=None, **params) -> str:
    body = {"task": "test-devices", "params": params, **({"resources": resources} if resources else {})}
    response = client.post("/api/training", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]["id"]


def gpu_cells(page: Page, host: str) -> list[str]:
    """Each GPU row's job cell on ``host``'s card, in index order."""
    return page.locator(f".host[data-host='{host}'] table.gpus tbody tr td:last-child").all_text_contents()


def fits(page: Page, width: int) -> bool:
    return page.evaluate("document.documentElement.scrollWidth") <= width


def test_the_hosts_page_shows_each_hosts_gpus_and_the_job_holding_each_live(page: Page, client, workers, redis):
    workers("gpu-box", TRAINQ_FAKE_GPUS="4", TRAINQ_CPUS="8", TRAINQ_MEMORY="24G", TRAINQ_SLOTS="3", **SAMPLE)
    workers("cpu-box", TRAINQ_CPUS="2", **SAMPLE)
    page.goto("/hosts")
    box = page.locator(".host[data-host='gpu-box']")
    expect(box.locator("h2")).to_have_text("gpu-box")
    expect(box.locator(".h-gpus")).to_have_text("4 of 4 free (fake GPUs)")
    expect(box.locator(".h-cpus")).to_have_text("0 of 8 reserved")
    expect(box.locator(".h-memory")).to_have_text("0 of 24 GB reserved")
    expect(box.locator(".h-jobs")).to_have_text("0 in 3 slots")
    expect(box.locator(".h-tasks")).to_contain_text("test-devices")
    expect(box.locator(".h-seen")).not_to_have_text("–")
    assert gpu_cells(page, "gpu-box") == ["free"] * 4
    assert box.locator("tbody tr").first.locator("td").all_text_contents()[:3] == ["0", "fake GPU", "16 GB"]
    expect(page.locator(".host[data-host='cpu-box'] .no-gpus")).to_have_text("No GPUs offered.")
    expect(page.locator(".host[data-host='cpu-box'] .h-cpus")).to_have_text("0 of 2 reserved")
    mark_no_reload(page)

    two = submit(client, {"gpus": 2, "cpus": 2, "memory_gb": 4}, seconds=600)
    one = submit(client, seconds=600)  # the task declares one GPU
    wait_status(two, "running", timeout=180)
    wait_status(one, "running", timeout=180)
    expect(box.locator(".h-gpus")).to_have_text("1 of 4 free (fake GPUs)")  # the page followed, no reload
    expect(box.locator(".h-cpus")).to_have_text("3 of 8 reserved")
    expect(box.locator(".h-memory")).to_have_text("4 of 24 GB reserved")
    expect(box.locator(".h-jobs")).to_have_text("2 in 3 slots")
    holders = box.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.jobId || null)")
    assert holders == [two, two, one, None]
    assert gpu_cells(page, "gpu-box")[3] == "free"
    assert f"test-devices {two[:8]}" in gpu_cells(page, "gpu-box")[0]
    assert_not_reloaded(page)

    page.set_viewport_size({"width": 375, "height": 800})  # a phone: no sideways scroll
    wait_for(lambda: fits(page, 375), 5, "the hosts page to fit 375 px")
    expect(box.locator("tr[data-gpu='0'] a.gpu-job")).to_be_visible()
    page.set_viewport_size({"width": 1280, "height": 900})

    box.locator("tr[data-gpu='0'] a.gpu-job").click()  # the holder's link: its job page, where it runs
    page.wait_for_url(f"**/jobs/{two}")
    expect(page.locator("#d-resources")).to_have_text("2 GPUs, 2 CPUs, 4 GB of memory")
    expect(page.locator("#d-placement")).to_contain_text("gpu-box")
    expect(page.locator("#d-placement")).to_contain_text("GPUs 0, 1")

    assert client.delete(f"/api/training/{two}").status_code == 200
    page.goto("/hosts")
    expect(box.locator(".h-gpus")).to_have_text("3 of 4 free (fake GPUs)")
    assert gpu_cells(page, "gpu-box")[:2] == ["free", "free"]
    assert client.delete(f"/api/training/{one}").status_code == 200

    why = "disk full: no space left on device writing checkpoint to /ckpt"  # as a full worker says it (test_faults)
    redis.set(queue.paused_key("cpu-box"), why)
    try:
        expect(page.locator(".host[data-host='cpu-box'] .h-paused")).to_have_text(f"cpu-box: {why}")  # live
        expect(box.locator(".h-paused")).to_have_count(0)  # the other host's card says nothing of it
    finally:
        redis.delete(queue.paused_key("cpu-box"))
    expect(page.locator(".host[data-host='cpu-box'] .h-paused")).to_have_count(0)


def test_no_live_host_says_how_to_start_one(page: Page):
    page.goto("/hosts")
    expect(page.locator("#no-hosts")).to_be_visible()
    expect(page.locator("#no-hosts")).to_contain_text("flask --app api worker")
    page.set_viewport_size({"width": 375, "height": 800})
    wait_for(lambda: fits(page, 375), 5, "the hosts page to fit 375 px")


def test_the_form_sends_resources_shows_a_resource_422_by_its_field_and_the_waiting_reason(page: Page, client,
                                                                                          workers):
    workers("gpu-box", TRAINQ_FAKE_GPUS="2", TRAINQ_CPUS="4", TRAINQ_SLOTS="3", **SAMPLE)
    form = open_form(page, "test-devices")
    gpus = form.locator("#res-gpus")
    expect(gpus).to_have_attribute("placeholder", "1")  # the task's declared default
    expect(form.locator("#hint-res-gpus")).to_contain_text("empty: 1, as task test-devices declares")
    expect(form.locator("#res-cpus")).to_have_attribute("placeholder", "1")
    expect(form.locator("#res-memory_gb")).to_have_attribute("placeholder", "no limit")

    gpus.fill("16")  # more than any host has: refused at submit, the message next to the field
    form.locator("#param-seconds").fill("600")
    form.locator("button[type=submit]").click()
    expect(form.locator("#err-res-gpus")).to_contain_text("asks 16 GPUs")
    expect(form.locator("#err-res-gpus")).to_contain_text("gpu-box, has 2")
    assert gpus.get_attribute("aria-invalid") == "true"
    expect(gpus).to_be_focused()
    gpus.fill("1.5")  # whole GPUs only
    form.locator("button[type=submit]").click()
    expect(form.locator("#err-res-gpus")).to_contain_text("resources.gpus")
    assert db.session.query(TrainingJob).count() == 0

    gpus.fill("2")
    form.locator("#res-cpus").fill("2")
    form.locator("#res-memory_gb").fill("1.5")
    form.locator("#job-name").fill("two-gpus")
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/jobs/*")
    first = page.url.rsplit("/", 1)[1]
    assert client.get(f"/api/training/{first}").get_json()["resources"] == {"gpus": 2, "cpus": 2, "memory_gb": 1.5}
    expect(page.locator("#d-resources")).to_have_text("2 GPUs, 2 CPUs, 1.5 GB of memory")
    wait_status(first, "running", timeout=180)

    form = open_form(page, "test-devices")  # a second 2-GPU job waits, and says why
    form.locator("#res-gpus").fill("2")
    form.locator("#job-name").fill("waits")
    form.locator("#param-seconds").fill("600")
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/jobs/*")
    second = page.url.rsplit("/", 1)[1]
    reason = "waiting for 2 GPUs: the most free on any host offering task test-devices is 0 GPUs (gpu-box)"
    expect(page.locator("#status-reason")).to_have_text(reason)
    expect(page.locator("#d-placement")).to_have_text("waiting to be placed")
    page.goto("/")
    listed = page.locator(f"tr[data-job-id='{second}'] .reason")
    expect(listed).to_have_text(reason)
    expect(listed).to_be_visible()
    assert listed.get_attribute("title") == reason
    # wraps onto more lines rather than cut to one (a poll may replace the row meanwhile: no box until it is back)
    wait_for(lambda: (box := listed.bounding_box()) is not None and box["height"] > 20, 10, "the reason to wrap")
    page.set_viewport_size({"width": 375, "height": 800})
    expect(listed).to_be_visible()
    wait_for(lambda: fits(page, 375), 5, "the list to fit 375 px")
    open_form(page, "test-devices")
    expect(page.locator("#res-memory_gb")).to_be_visible()
    assert fits(page, 375), "the form with its resource fields scrolls sideways at 375 px"

    assert client.delete(f"/api/training/{first}").status_code == 200  # the waiting job takes the freed GPUs
    wait_status(second, "running", timeout=120)
    page.goto(f"/jobs/{second}")
    expect(page.locator("#d-placement")).to_contain_text("GPUs 0, 1")
    assert client.delete(f"/api/training/{second}").status_code == 200


def test_run_again_fills_in_the_jobs_resources(page: Page, client, workers):
    workers("gpu-box", TRAINQ_FAKE_GPUS="2", TRAINQ_CPUS="4", TRAINQ_SLOTS="2", **SAMPLE)
    source = submit(client, {"gpus": 2, "cpus": 3, "memory_gb": 2}, seconds=0)
    wait_status(source, "completed", timeout=180)
    page.goto(f"/jobs/{source}")
    page.locator("#run-again").click()
    form = page.locator("#submit-form")
    expect(form.locator("#res-gpus")).to_have_value("2")
    expect(form.locator("#res-cpus")).to_have_value("3")
    expect(form.locator("#res-memory_gb")).to_have_value("2")
