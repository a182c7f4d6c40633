/* The jobs page: the list (live, filtered, paged by the API's cursor) and the submit form. */
"use strict";

const rows = document.getElementById("job-rows");
const filter = document.getElementById("status-filter");
const older = document.getElementById("older");
const newer = document.getElementById("newer");
const form = document.getElementById("submit-form");

const view = {
  status: filter.value,
  cursors: [],  // the cursors of the pages before this one; the last is this page's
  page: JSON.parse(document.getElementById("initial").textContent),
  receivedAt: performance.now(),
  resource: null,
};

function listUrl() {
  const params = new URLSearchParams();
  if (view.status) params.set("status", view.status);
  const cursor = view.cursors[view.cursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  const query = params.toString();
  return "/api/training" + (query ? `?${query}` : "");
}

function heartbeatCell(job) {
  return job.status === "running" ? heartbeatText(job, view.receivedAt) : "–";
}

function jobRow(job) {
  const metrics = job.metrics || {};
  return h("tr", {"data-job-id": job.id, "data-status": job.status},
    h("td", {"data-label": "Name"}, h("a", {href: `/jobs/${job.id}`}, job.name)),
    h("td", {"data-label": "Status"}, h("div", {}, statusBadge(job.status), " ", staleBadge(job),
      job.status_reason ? h("div", {class: "reason", title: job.status_reason}, job.status_reason) : null)),
    h("td", {"data-label": "Progress"}, progressBar(job)),
    h("td", {"data-label": "Loss"}, fmtNumber(job.loss)),
    h("td", {"data-label": "Val. acc."}, fmtPercent(metrics.val_accuracy)),
    h("td", {"data-label": "Started"}, fmtTime(job.started_at)),
    h("td", {"data-label": "Duration", class: "duration"}, fmtDuration(duration(job))),
    h("td", {"data-label": "Heartbeat", class: "heartbeat"}, heartbeatCell(job)));
}

function render() {
  rows.replaceChildren(...view.page.jobs.map(jobRow));
  document.getElementById("empty").hidden = view.page.jobs.length > 0;
  older.disabled = !view.page.next_cursor;
  newer.disabled = view.cursors.length === 0;
}

/** Between changes only the clocks move: update those cells in place (no re-render, no flicker). */
function tickClocks() {
  for (const job of view.page.jobs) {
    const tr = rows.querySelector(`tr[data-job-id="${job.id}"]`);
    if (!tr) continue;
    tr.querySelector(".duration").textContent = fmtDuration(duration(job));
    tr.querySelector(".heartbeat").textContent = heartbeatCell(job);
  }
}

function navigate() {
  view.resource = new Resource(listUrl());
  const params = new URLSearchParams();
  if (view.status) params.set("status", view.status);
  history.replaceState(null, "", params.toString() ? `/?${params}` : "/");
  refresh();
}

view.resource = new Resource(listUrl());
render();

const refresh = poll(async () => {
  const body = await view.resource.fetch();
  if (body) {
    view.page = body;
    view.receivedAt = performance.now();
    render();
  } else {
    tickClocks();
  }
});

filter.addEventListener("change", () => {
  view.status = filter.value;
  view.cursors = [];
  navigate();
});
older.addEventListener("click", () => {
  view.cursors.push(view.page.next_cursor);
  navigate();
});
newer.addEventListener("click", () => {
  view.cursors.pop();
  navigate();
});

// ---------------------------------------------------------------- the submit form

/** What the user typed, as JSON: numbers where they look like numbers, anything else as typed, so the
    API (not this page) judges it and names the field. Empty fields are left to the API's defaults. */
function typed(raw) {
  const text = raw.trim();
  return /^-?\d+(\.\d+)?(e-?\d+)?$/i.test(text) ? Number(text) : text;
}

function formPayload() {
  const data = new FormData(form);
  const config = {};
  for (const [key, raw] of data.entries()) {
    if (key === "name" || raw.trim() === "") continue;
    if (key === "hidden_sizes") config[key] = raw.split(",").map((s) => typed(s)).filter((s) => s !== "");
    else if (key === "dataset" || key === "model") config[key] = raw;
    else config[key] = typed(raw);
  }
  const name = data.get("name").trim();
  return name ? {name, config} : {config};
}

function clearErrors() {
  form.querySelectorAll(".field-error, .form-error").forEach((el) => { el.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const body = await callApi("POST", "/api/training", formPayload());
    window.location.assign(`/jobs/${body.job.id}`);
  } catch (err) {
    const field = err.field && err.field.replace(/^config\./, "");
    const slot = field && document.getElementById(`err-${field}`);
    if (slot) {
      slot.textContent = err.message;
      const input = form.elements[field];
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
    } else {
      document.getElementById("err-form").textContent = err.message;
    }
  } finally {
    button.disabled = false;
  }
});
