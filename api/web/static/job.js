/* One job's page: status, actions (exactly those the API lists), a curve per metric, details, params,
   artifacts, checkpoints, timeline and the live log, kept current by polling the JSON API with ETags. */
"use strict";

const initial = JSON.parse(document.getElementById("initial").textContent);
const base = `/api/training/${initial.id}`;
const MAX_LOG_LINES = 1000;  // the page keeps the newest lines; the API has them all

const state = {
  job: initial,
  receivedAt: performance.now(),
  resources: {job: new Resource(base), events: new Resource(`${base}/events`),
    checkpoints: new Resource(`${base}/checkpoints`), artifacts: new Resource(`${base}/artifacts`)},
  logCursor: 0,
  logMore: true,  // read the log again: the job changed, or the last read found lines
  historyLength: -1,
  charts: null,
  sampled: null,  // a long history's whole series, downsampled (curveHistory)
  sampledAt: -Infinity,
  sampling: false,
};
const SAMPLE_POINTS = 2000;
const NON_FINITE_COLOUR = "#b91c1c";
const SAMPLE_EVERY_MS = 30000;

// ---------------------------------------------------------------- actions

const ACTIONS = {
  cancel: {label: "Cancel", danger: true, dialog: "cancel-dialog", call: () => callApi("DELETE", base)},
  pause: {label: "Pause", call: () => callApi("POST", `${base}/pause`)},
  resume: {label: "Resume from checkpoint", call: () => callApi("POST", `${base}/resume`)},
  "force-start": {label: (job) => job.status === "queued" ? "Force start" : "Start again from scratch",
    call: () => callApi("POST", `${base}/force-start`)},
  "mark-failed": {label: "Mark as failed", danger: true, dialog: "fail-dialog",
    call: () => callApi("POST", `${base}/mark-failed`,
      {reason: document.getElementById("fail-reason").value.trim() || "no reason given"})},
};

function say(text, isError) {
  const el = document.getElementById("action-message");
  el.textContent = text;
  el.className = isError ? "error" : "ok";
}

async function perform(name) {
  const action = ACTIONS[name];
  if (action.dialog) {
    const dialog = document.getElementById(action.dialog);
    const answer = await new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue), {once: true});
      dialog.returnValue = "";
      dialog.showModal();
    });
    if (answer !== "confirm") return;
  }
  try {
    const body = await action.call();
    say(body.message || "Done", false);
  } catch (err) {
    say(err.message, true);
  }
  refresh();
}

function renderActions(job) {
  const buttons = (job.actions || []).filter((name) => ACTIONS[name]).map((name) => {
    const action = ACTIONS[name];
    const label = typeof action.label === "function" ? action.label(job) : action.label;
    return h("button", {type: "button", "data-action": name, class: action.danger ? "danger" : null,
      onclick: () => perform(name)}, label);
  });
  const box = document.getElementById("actions");
  const now = buttons.map((b) => b.textContent).join("|");
  if (box.dataset.shown !== now) {  // same buttons: leave them (a click in flight, focus) alone
    box.replaceChildren(...buttons);
    box.dataset.shown = now;
  }
}

// ---------------------------------------------------------------- the job itself

function detail(term, value, id) {
  return [h("dt", {}, term), h("dd", {id}, value === null || value === undefined || value === "" ? "–" : value)];
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** What the job asked: "2 GPUs, 4 CPUs, 16 GB of memory". */
function resourcesText(resources) {
  if (!resources) return null;
  const parts = [plural(resources.gpus, "GPU"), plural(resources.cpus, "CPU")];
  parts.push(resources.memory_gb ? `${resources.memory_gb} GB of memory` : "no memory limit");
  return parts.join(", ");
}

/** Where it runs (null while it waits): its host (linked to the hosts page), worker and GPUs. */
function placementValue(placement) {
  if (!placement) return null;
  const gpus = placement.gpus.length ? ` · GPU${placement.gpus.length === 1 ? "" : "s"} ${placement.gpus.join(", ")}` : "";
  return h("span", {}, h("a", {href: "/hosts"}, placement.host), placement.worker ? ` (${placement.worker})` : "",
    gpus, ` · ${plural(placement.cpus, "CPU")}`);
}

/** The time a job spent training over all its runs (attempts, resumes): each to its end, the running one to now. */
function trainingSeconds(job) {
  if (!job.runs || !job.runs.length) return duration(job);
  return job.runs.reduce((sum, run) => sum + ((run.ended_at ? Date.parse(run.ended_at) : Date.now())
    - Date.parse(run.started_at)) / 1000, 0);
}

function runItem(run) {
  const seconds = ((run.ended_at ? Date.parse(run.ended_at) : Date.now()) - Date.parse(run.started_at)) / 1000;
  return h("li", {"data-attempt": run.attempt}, `attempt ${run.attempt}: ${fmtTime(run.started_at)}, `,
    `${fmtDuration(seconds)}${run.ended_as ? ` → ${run.ended_as}` : " (running)"}`,
    run.worker ? h("span", {class: "muted"}, ` · ${run.worker}`) : null);
}

function renderProvenance(job) {
  const p = job.provenance;
  document.getElementById("provenance").replaceChildren(...(p
    ? [detail("attempt", p.attempt), ...PROVENANCE.map(([key, label]) => detail(label, provenanceText(job, key),
      `prov-${key}`))].flat()
    : detail("recorded", "not yet: its worker records it when an attempt starts")));
}

function renderJob(job) {
  document.getElementById("status-badge").replaceChildren(statusBadge(job.status));
  document.getElementById("stale-badge").replaceChildren(staleBadge(job) || "");
  document.getElementById("status-reason").textContent = job.status_reason || "";
  document.getElementById("progress").replaceChildren(progressBar(job, true));
  renderActions(job);
  document.getElementById("details").replaceChildren(...[
    detail("Task", job.task), detail("Owner", job.owner, "d-owner"),
    detail("Resources", resourcesText(job.resources), "d-resources"),
    detail("Placement", placementValue(job.placement) || (job.status === "queued" ? "waiting to be placed" : null),
      "d-placement"),
    detail("Worker", job.worker_name), detail("Host", job.hostname), detail("PID", job.worker_pid),
    detail("Attempts", `${job.attempts} of ${job.max_attempts}`), detail("RQ job", job.rq_job_id),
    detail("Created", fmtTime(job.created_at)),
    detail("Started", fmtTime(job.first_started_at || job.started_at), "d-started"),
    detail("Finished", fmtTime(job.finished_at)),
    detail("Training time", fmtDuration(trainingSeconds(job)), "d-duration"),
    (job.runs || []).length > 1 ? detail("Runs", h("ol", {class: "runs", id: "runs"}, job.runs.map(runItem))) : [],
    detail("Last heartbeat", heartbeatText(job, state.receivedAt), "d-heartbeat"),
    job.error_message ? detail("Error", h("details", {}, h("summary", {}, "traceback"),
      h("pre", {class: "error-text"}, job.error_message))) : [],
  ].flat());
  renderProvenance(job);
  const metrics = Object.entries(job.metrics || {});
  document.getElementById("metrics").replaceChildren(...(metrics.length
    ? metrics.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {"data-metric": name,
      class: isNonFinite(value) ? "nonfinite" : null}, fmtMetric(name, value))])
    : [h("dt", {class: "muted"}, "none yet"), h("dd")]));
  renderCurves(curveHistory(job));
  if (job.history_truncated && !state.sampling && performance.now() - state.sampledAt > SAMPLE_EVERY_MS) {
    state.sampling = true;
    fetch(`${base}/history?format=json&points=${SAMPLE_POINTS}`, {headers: {...authHeaders(), Accept: "application/json"}, cache: "no-store",
      credentials: "omit"})
      .then((response) => (response.ok ? response.json() : null))
      .then((body) => {
        if (body) {
          state.sampled = body.history;
          state.sampledAt = performance.now();
          renderCurves(curveHistory(state.job));
        }
      })
      .catch(() => {})
      .finally(() => { state.sampling = false; });
  }
}

/** What the curves draw: the inline history; for a long one (the API sends only its last 1,000 reports), the
    whole series downsampled by the API (min/max per bucket, GET .../history?points=), then the inline tail. */
function curveHistory(job) {
  const tail = job.history || [];
  if (!job.history_truncated || !state.sampled || !tail.length) return tail;
  const key = (entry) => (typeof entry.epoch === "number" ? entry.epoch : entry.step);
  const start = key(tail[0]);
  return [...state.sampled.filter((entry) => key(entry) < start), ...tail];
}

// ---------------------------------------------------------------- curves (uPlot), one per metric

/** Every metric in the history as points on its axis: the epoch when every entry with it has one, else the
    step (step-only reports are sampled). Epoch curves first, each group in the order the metrics first appear. */
function metricSeries(history) {
  return metricNames(history).map((name) => {
    const axis = axisOf(history, name);
    const byX = metricPoints(history, name, axis);
    const xs = [...byX.keys()].sort((a, b) => a - b);
    const ys = xs.map((x) => byX.get(x));
    const bad = nonFinitePoints(history, name, axis);
    return {name, axis, xs, ys, bad, marks: nonFiniteMarks(xs, ys, bad)};
  }).sort((a, b) => Number(a.axis !== "epoch") - Number(b.axis !== "epoch"));
}

function makeChart(el, series, colour) {
  const line = {label: series.name, stroke: colour, width: 2,
    value: (u, v) => (v === null || v === undefined ? "–" : fmtMetric(series.name, v))};
  if (series.axis === "epoch") line.points = {show: true, size: 5};
  return new uPlot({
    title: series.name, width: chartWidth(el), height: 180,
    scales: {x: {time: false}},
    axes: [{label: series.axis, incrs: WHOLE_STEPS}, {size: 56, values: tickLabels}],
    series: [{label: series.axis}, line, {label: "not finite", stroke: NON_FINITE_COLOUR, fill: NON_FINITE_COLOUR,
      paths: () => null, points: {show: true, size: 9, stroke: NON_FINITE_COLOUR, fill: NON_FINITE_COLOUR},
      value: (u, v, si, i) => (v === null || v === undefined ? "–" : (el.nonFinite || new Map()).get(u.data[0][i]) || "–")}],
  }, [[], [], []], el);
}

function renderCurves(history) {
  const box = document.getElementById("charts");
  const all = metricSeries(history);
  document.getElementById("curves-empty").hidden = all.length > 0;
  if (!state.charts) {
    state.charts = new Map();
    new ResizeObserver(() => {
      for (const {el, plot} of state.charts.values()) plot.setSize({width: chartWidth(el), height: 180});
    }).observe(box);
  }
  all.forEach((series, index) => {
    let chart = state.charts.get(series.name);
    if (chart && chart.axis !== series.axis) {  // a task that changed its mind: draw it afresh
      chart.plot.destroy();
      chart.el.remove();
      chart = null;
    }
    if (!chart) {
      const el = h("div", {class: "chart", "data-metric": series.name, role: "img",
        "aria-label": `${series.name} per ${series.axis}`});
      box.append(el);
      chart = {el, axis: series.axis, plot: makeChart(el, series, COLOURS[index % COLOURS.length])};
      state.charts.set(series.name, chart);
    }
    chart.el.nonFinite = series.bad;  // the marker's legend reads what each point stands for
    chart.plot.setData([series.xs, series.ys, series.marks]);
    chart.el.dataset.points = String(series.ys.filter((y) => y !== null).length);
    chart.el.dataset.axis = series.axis;
    chart.el.dataset.nonfinite = String(series.bad.size);
    let note = chart.el.querySelector(".chart-note");
    if (series.bad.size && !note) {
      note = h("p", {class: "chart-note nonfinite"});
      chart.el.append(note);
    }
    if (note) {
      const [x, value] = [...series.bad.entries()][0] || [];
      note.textContent = series.bad.size ? `${series.name} became ${value} at ${series.axis} ${x}` +
        (series.bad.size > 1 ? ` (${series.bad.size} points not finite)` : "") : "";
    }
  });
  document.getElementById("curves-title").dataset.metrics = String(all.length);
}

// ---------------------------------------------------------------- artifacts, checkpoints, timeline, log

function renderArtifacts(artifacts) {
  const items = artifacts.map((a) => h("li", {"data-artifact": a.name},
    h("a", {href: a.url, download: a.name, class: "artifact-link"}, a.name), " ",
    h("span", {class: "muted"}, `· ${fmtBytes(a.size)} · `),
    h("code", {class: "sha", title: `sha256 ${a.sha256}`}, `sha256 ${a.sha256.slice(0, 12)}…`),
    h("div", {class: "muted path"}, `attempt ${a.attempt} · ${fmtTime(a.created_at)}`)));
  document.getElementById("artifacts").replaceChildren(...(items.length ? items : [h("li", {class: "muted"},
    "No artifact yet: a task saves them with ctx.save_artifact().")]));
}

const SHOWN_CHECKPOINTS = 5;

function renderCheckpoints(checkpoints) {
  const items = checkpoints.slice().reverse().map((c) => h("li", {"data-seq": c.seq},
    [`#${c.seq}`, typeof c.epoch === "number" ? `epoch ${c.epoch}` : null,
      typeof c.step === "number" ? `step ${c.step}` : null, fmtBytes(c.size_bytes)].filter(Boolean).join(" · "),
    c.resume_point ? [" ", h("span", {class: "badge"}, "resume point")] : null,
    h("div", {class: "muted path"}, c.path)));
  const older = items.splice(SHOWN_CHECKPOINTS);
  if (older.length) items.push(h("li", {}, h("details", {}, h("summary", {}, `${older.length} older`), ...older)));
  document.getElementById("checkpoints").replaceChildren(...(items.length ? items : [h("li", {class: "muted"},
    "No checkpoint yet.")]));
}

function renderTimeline(events) {
  document.getElementById("timeline").replaceChildren(...events.map((e) => h("li", {},
    h("time", {datetime: e.at}, fmtTime(e.at)), " ",
    e.from_status ? [statusBadge(e.from_status), " → "] : null, statusBadge(e.to_status),
    h("span", {class: "actor"}, ` by ${e.actor}${e.user ? ` (${e.user})` : ""}`),
    e.reason ? h("div", {class: "reason"}, e.reason) : null)));
}

async function readLog() {
  const body = await new Resource(`${base}/logs?after=${state.logCursor}`).fetch();
  document.getElementById("log-truncated").hidden = !body.truncated;
  state.logMore = body.lines.length > 0;
  if (!state.logMore) return;
  const pre = document.getElementById("log");
  const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  const shown = Number((pre.lastElementChild && pre.lastElementChild.dataset.n) || 0);
  pre.append(...body.lines.filter((l) => l.n > shown)  // each line once, whatever answers overlap
    .map((l) => h("div", {class: "log-line", "data-n": l.n}, l.line)));
  while (pre.childElementCount > MAX_LOG_LINES) pre.firstElementChild.remove();
  state.logCursor = body.next_cursor;
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

/** An empty log box says why it is empty: a queued job has not started, so it has written nothing yet. */
function renderLogNote(job) {
  const pre = document.getElementById("log");
  const empty = !pre.querySelector(".log-line");
  const text = !empty ? null : job.status === "queued" ? "waiting to start: the log begins when a worker takes it"
    : job.status === "running" ? "starting…" : "no log lines";
  let note = document.getElementById("log-note");
  if (!text) {
    if (note) note.remove();
    return;
  }
  if (!note) {
    note = h("div", {id: "log-note", class: "log-note"});
    pre.prepend(note);
  }
  note.textContent = text;
}

// ---------------------------------------------------------------- live

const refresh = poll(async () => {
  const job = await state.resources.job.fetch();
  if (job) {
    state.job = job;
    state.receivedAt = performance.now();
    renderJob(job);
    const [events, checkpoints, artifacts] = await Promise.all([state.resources.events.fetch(),
      state.resources.checkpoints.fetch(), state.resources.artifacts.fetch()]);
    if (events) renderTimeline(events.events);
    if (checkpoints) renderCheckpoints(checkpoints.checkpoints);
    if (artifacts) renderArtifacts(artifacts.artifacts);
  } else {  // unchanged: only the clocks move
    document.getElementById("d-duration").textContent = fmtDuration(trainingSeconds(state.job));
    document.getElementById("d-heartbeat").textContent = heartbeatText(state.job, state.receivedAt);
  }
  if (job || state.logMore) await readLog();  // a job that stopped changing has no new lines either
  renderLogNote(state.job);
});

renderJob(initial);
renderLogNote(initial);
{  // the submit form's answer said no live worker offers this task: say it here, once
  const key = `trainq-warning-${initial.id}`;
  const warning = sessionStorage.getItem(key);
  if (warning) {
    say(warning, false);
    document.getElementById("action-message").className = "warn";
    sessionStorage.removeItem(key);
  }
}
