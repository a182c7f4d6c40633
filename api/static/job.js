/* One job's page: status, actions (exactly those the API lists), curves, details, checkpoints, timeline
   and the live log, kept current by polling the JSON API with ETags. */
"use strict";

const initial = JSON.parse(document.getElementById("initial").textContent);
const base = `/api/training/${initial.id}`;
const MAX_LOG_LINES = 1000;  // the page keeps the newest lines; the API has them all

const state = {
  job: initial,
  receivedAt: performance.now(),
  resources: {job: new Resource(base), events: new Resource(`${base}/events`),
    checkpoints: new Resource(`${base}/checkpoints`)},
  logCursor: 0,
  logMore: true,  // read the log again: the job changed, or the last read found lines
  historyLength: -1,
  charts: null,
};

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


function renderJob(job) {
  document.getElementById("status-badge").replaceChildren(statusBadge(job.status));
  document.getElementById("stale-badge").replaceChildren(staleBadge(job) || "");
  document.getElementById("status-reason").textContent = job.status_reason || "";
  const steps = job.total_steps ? ` · step ${job.step} of ${job.total_steps}` : "";
  document.getElementById("progress").replaceChildren(progressBar(job), h("span", {class: "muted"}, steps));
  renderActions(job);
  document.getElementById("details").replaceChildren(...[
    detail("Worker", job.worker_name), detail("Host", job.hostname), detail("PID", job.worker_pid),
    detail("Attempts", `${job.attempts} of ${job.max_attempts}`), detail("RQ job", job.rq_job_id),
    detail("Created", fmtTime(job.created_at)), detail("Started", fmtTime(job.started_at)),
    detail("Finished", fmtTime(job.finished_at)), detail("Duration", fmtDuration(duration(job)), "d-duration"),
    detail("Last heartbeat", heartbeatText(job, state.receivedAt), "d-heartbeat"),
    detail("Loss", fmtNumber(job.loss)), detail("Val. accuracy", fmtPercent((job.metrics || {}).val_accuracy)),
    job.error_message ? detail("Error", h("details", {}, h("summary", {}, "traceback"),
      h("pre", {class: "error-text"}, job.error_message))) : [],
  ].flat());
  renderCurves(job.history || []);
}

// ---------------------------------------------------------------- curves (uPlot)

function chart(el, title, series) {
  const width = Math.max(260, el.clientWidth || 300);
  return new uPlot({
    title, width, height: 200,
    scales: {x: {time: false}},
    axes: [{label: "epoch"}, {}],
    series: [{label: "epoch"}, ...series.map(([label, stroke]) => ({label, stroke, width: 2, points: {show: true}}))],
  }, [[], ...series.map(() => [])], el);
}

function renderCurves(history) {
  if (history.length === state.historyLength) return;
  state.historyLength = history.length;
  document.getElementById("curves-empty").hidden = history.length > 0;
  if (!state.charts) {
    const lossEl = document.getElementById("loss-chart");
    const accEl = document.getElementById("acc-chart");
    state.charts = {
      loss: chart(lossEl, "Loss", [["train loss", "#1f6feb"], ["validation loss", "#d97706"]]),
      acc: chart(accEl, "Validation accuracy", [["validation accuracy", "#15803d"]]),
    };
    new ResizeObserver(() => {
      for (const [key, el] of [["loss", lossEl], ["acc", accEl]]) {
        state.charts[key].setSize({width: Math.max(260, el.clientWidth), height: 200});
      }
    }).observe(lossEl);
  }
  const epochs = history.map((e) => e.epoch);
  state.charts.loss.setData([epochs, history.map((e) => e.train_loss), history.map((e) => e.val_loss)]);
  state.charts.acc.setData([epochs, history.map((e) => e.val_accuracy)]);
  document.getElementById("curves-title").dataset.points = String(history.length);
}

// ---------------------------------------------------------------- checkpoints, timeline, log

const SHOWN_CHECKPOINTS = 5;

function renderCheckpoints(checkpoints) {
  const items = checkpoints.slice().reverse().map((c) => h("li", {},
    `epoch ${c.epoch}${c.batch ? `, batch ${c.batch}` : ""} · ${(c.size_bytes / 1024).toFixed(0)} KiB`,
    c.resume_point ? h("span", {class: "badge"}, "resume point") : null,
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
    h("span", {class: "actor"}, ` by ${e.actor}`),
    e.reason ? h("div", {class: "reason"}, e.reason) : null)));
}

async function readLog() {
  const body = await new Resource(`${base}/logs?after=${state.logCursor}`).fetch();
  document.getElementById("log-truncated").hidden = !body.truncated;
  state.logMore = body.lines.length > 0;
  if (!state.logMore) return;
  const pre = document.getElementById("log");
  const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  pre.append(...body.lines.map((l) => h("div", {class: "log-line", "data-n": l.n}, l.line)));
  while (pre.childElementCount > MAX_LOG_LINES) pre.firstElementChild.remove();
  state.logCursor = body.next_cursor;
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

// ---------------------------------------------------------------- live

const refresh = poll(async () => {
  const job = await state.resources.job.fetch();
  if (job) {
    state.job = job;
    state.receivedAt = performance.now();
    renderJob(job);
    const [events, checkpoints] = await Promise.all([state.resources.events.fetch(),
      state.resources.checkpoints.fetch()]);
    if (events) renderTimeline(events.events);
    if (checkpoints) renderCheckpoints(checkpoints.checkpoints);
  } else {  // unchanged: only the clocks move
    document.getElementById("d-duration").textContent = fmtDuration(duration(state.job));
    document.getElementById("d-heartbeat").textContent = heartbeatText(state.job, state.receivedAt);
  }
  if (job || state.logMore) await readLog();  // a job that stopped changing has no new lines either
});

renderJob(initial);
