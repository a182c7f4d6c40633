/* Shared by the monitor's pages: DOM building, formatting, and polling the JSON API with ETags.
   No status logic here: statuses, staleness and allowed actions all come from the API. */
"use strict";

const POLL_MS = 1000;

/** h("a", {href: "/x", class: "y"}, "text", child) -> element; text is always text, never HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function statusBadge(status) {
  return h("span", {class: `badge status-${status}`}, status);
}

function staleBadge(job) {
  return job.stale ? h("span", {class: "badge stale", title: "no heartbeat for longer than the timeout; " +
    "the reconciler decides whether its worker is gone"}, "stale") : null;
}

function fmtNumber(value, digits = 4) {
  return typeof value === "number" ? value.toFixed(digits) : "–";
}

function fmtPercent(value) {
  return typeof value === "number" ? `${(value * 100).toFixed(1)} %` : "–";
}

function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds)) return "–";
  if (seconds < 10) return `${Math.max(0, seconds).toFixed(1)} s`;  // a short job's time is not "0 s"
  seconds = Math.round(seconds);
  const hrs = Math.floor(seconds / 3600), mins = Math.floor(seconds / 60) % 60, secs = seconds % 60;
  return hrs ? `${hrs} h ${mins} min` : mins ? `${mins} min ${secs} s` : `${secs} s`;
}

/** How long a job has run: to its end, or (still going) to now. */
function duration(job) {
  if (!job.started_at) return null;
  return ((job.finished_at ? Date.parse(job.finished_at) : Date.now()) - Date.parse(job.started_at)) / 1000;
}

/** How long a listed job has trained over all its runs: those that ended (``ended_runs_seconds``), and the one
    running now from its start. */
function trainedFor(job) {
  if (typeof job.ended_runs_seconds !== "number") return duration(job);
  const current = job.status === "running" && job.started_at ? (Date.now() - Date.parse(job.started_at)) / 1000 : 0;
  return job.ended_runs_seconds + current;
}

/** The heartbeat age the API gave, counted on from when that answer came (no clock skew involved); none for a job
    that is not running (its last beat says nothing now). */
function heartbeatText(job, receivedAt) {
  if (job.status !== "running" || typeof job.heartbeat_age_seconds !== "number") return "–";
  return `${fmtDuration(job.heartbeat_age_seconds + (performance.now() - receivedAt) / 1000)} ago`;
}

/** How far a job is, by what its task said it takes: steps (``total_steps``), else epochs (``total_epochs``);
    ``label`` says it in words, ``steps`` adds the step count when both apply. A paused job is as far as the
    checkpoint it resumes from (``resumes_at``), which may be behind the step it had reached. */
function progressOf(job) {
  const resume = job.status === "paused" && job.resumes_at ? job.resumes_at : null;
  const at = resume ? {epoch: resume.epoch ?? job.epoch, step: resume.step ?? job.step} : job;
  const p = progressAt(job, at);
  if (resume && p.label !== "–") p.label = `resumes from ${p.label}`;
  return p;
}

function progressAt(job, at) {
  const epochs = job.total_epochs || null;
  const epoch = Math.min(at.epoch || 0, epochs || Infinity), step = at.step || 0;
  const epochText = epochs ? `epoch ${epoch} of ${epochs}` : null;
  if (job.total_steps) {
    const stepText = `step ${Math.min(step, job.total_steps)} of ${job.total_steps}`;
    return {max: job.total_steps, value: Math.min(step, job.total_steps), label: epochText || stepText,
      steps: epochText ? stepText : null};
  }
  if (epochs) return {max: epochs, value: epoch, label: epochText, steps: step ? `step ${step}` : null};
  const label = step ? `step ${step}` : at.epoch ? `epoch ${at.epoch}` : "–";
  return {max: null, value: null, label, steps: null};
}

function progressBar(job, withSteps = false) {
  const p = progressOf(job);
  return h("div", {class: "progress"},
    p.max ? h("progress", {max: p.max, value: p.value, "aria-label": p.label}) : null,
    h("span", {class: "progress-text"}, p.label),
    withSteps && p.steps ? h("span", {class: "muted progress-text"}, `· ${p.steps}`) : null);
}

function fmtBytes(bytes) {
  if (typeof bytes !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit ? `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}` : `${bytes} B`;
}

/** JSON has no NaN or infinity: the API sends a non-finite metric as the string "NaN", "Infinity" or
    "-Infinity", and the pages show it as it is (never as a gap or a dash). */
const NON_FINITE = new Set(["NaN", "Infinity", "-Infinity"]);

function isNonFinite(value) {
  return (typeof value === "number" && !isFinite(value)) || NON_FINITE.has(value);
}

/** A metric's value, whatever its scale: 4 significant digits, accuracies as percentages. */
function fmtMetric(name, value) {
  if (typeof value !== "number" || !isFinite(value)) return value === null || value === undefined ? "–" : String(value);
  if (/acc(uracy)?$/i.test(name) && value >= 0 && value <= 1) return fmtPercent(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  return abs !== 0 && (abs >= 1e5 || abs < 1e-3) ? value.toExponential(3) : String(Number(value.toPrecision(4)));
}

/** A GET that remembers its ETag: resolves to the parsed body when it changed, null on 304. */
class Resource {
  constructor(url) {
    this.url = url;
    this.etag = null;
  }

  async fetch() {
    const headers = {...authHeaders(), Accept: "application/json"};
    if (this.etag) headers["If-None-Match"] = this.etag;
    const response = await fetch(this.url, {headers, cache: "no-store", credentials: "omit"});
    if (response.status === 304) return null;
    if (response.status === 401) toLogin();
    const body = await response.json();
    if (!response.ok) throw new ApiError(response.status, body);
    this.etag = response.headers.get("ETag");
    return body;
  }
}

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.field = error.field || null;
  }
}

/** This tab's token: kept by the login page in sessionStorage (per origin, port included; no cookie). */
const TOKEN_KEY = "trainq.token";

function authHeaders() {
  const token = window.sessionStorage.getItem(TOKEN_KEY);
  return token ? {Authorization: `Bearer ${token}`} : {};
}

/** No token, or it was refused (revoked, expired, its user disabled): log in again, then come back here. */
function toLogin() {
  window.sessionStorage.removeItem(TOKEN_KEY);
  window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname + window.location.search)}`);
}

/** A state-changing call: JSON in, the token in its header, JSON out; throws ApiError. */
async function callApi(method, url, payload) {
  const init = {method, headers: {...authHeaders(), Accept: "application/json"}, credentials: "omit"};
  if (payload !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(payload);
  }
  const response = await fetch(url, init);
  if (response.status === 401) toLogin();
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** Links to the API's files (downloads, /metrics) need the token too: fetched with it, saved from a blob. */
document.addEventListener("click", async (event) => {
  const link = event.target.closest && event.target.closest("a[download]");
  if (!link || link.protocol === "blob:" || new URL(link.href).origin !== window.location.origin) return;
  event.preventDefault();
  const response = await fetch(link.href, {headers: authHeaders(), cache: "no-store", credentials: "omit"})
    .catch(() => null);
  if (!response) return;
  if (response.status === 401) return toLogin();
  const named = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "");
  const save = h("a", {href: URL.createObjectURL(await response.blob()), download: link.getAttribute("download")
    || (named && named[1]) || decodeURIComponent(new URL(link.href).pathname.split("/").pop())});
  document.body.append(save);
  save.click();
  save.remove();
  setTimeout(() => URL.revokeObjectURL(save.href), 60_000);
});

const logout = document.getElementById("logout");
if (logout) {
  logout.addEventListener("click", () => {
    window.sessionStorage.removeItem(TOKEN_KEY);
    window.location.assign("/login");
  });
}

/** Run ``tick`` now and then every POLL_MS after each finishes (never two at once); show a banner while
    the API cannot be reached, and keep trying. The function returned refreshes at once (after an action): while a
    tick is in flight, it runs one more right after that one ends, never a second beside it (two reads of the log
    from the same cursor would show its new lines twice). */
function poll(tick) {
  const banner = document.getElementById("connection");
  let timer = null, running = false, again = false;
  async function run() {
    clearTimeout(timer);
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await tick();
      banner.hidden = true;
    } catch (err) {
      banner.textContent = `Cannot reach the API (${err.message}); retrying every second…`;
      banner.hidden = false;
    } finally {
      running = false;
    }
    if (again) {
      again = false;
      run();
    } else {
      timer = setTimeout(run, POLL_MS);
    }
  }
  run();
  return run;  // call it to refresh at once (after an action)
}

// ---------------------------------------------------------------- what ran a job (its provenance)

/** The provenance fields the pages show, in order: [key, label, text of a job's provenance]. */
const PROVENANCE = [
  ["code_version", "code version", (p) => p.code_version],
  ["package", "package", (p) => (p.package ? `${p.package} ${p.package_version || ""}`.trim() : null)],
  ["module", "module", (p) => p.module],
  ["git_commit", "git commit", (p) => (p.git_commit ? `${p.git_commit.slice(0, 12)}${p.git_dirty ? " (dirty)" : ""}`
    : null)],
  ["python", "Python", (p) => p.python],
  ["torch", "torch", (p) => p.torch],
  ["cuda", "CUDA", (p) => p.cuda],
  ["gpu_driver", "GPU driver", (p) => p.gpu_driver],
  ["hostname", "host", (p) => p.hostname],
];

function provenanceText(job, key) {
  if (!job.provenance) return null;
  const field = PROVENANCE.find(([name]) => name === key);
  return field[2](job.provenance) || null;
}

// ---------------------------------------------------------------- metric curves (the job and compare pages)

const AXES = new Set(["epoch", "step"]);
const WHOLE_STEPS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7].map((p) => m * p))
  .sort((a, b) => a - b);  // epochs and steps are whole: no tick at 1.5
const COLOURS = ["#1f6feb", "#d97706", "#15803d", "#9333ea", "#dc2626", "#0891b2", "#4d7c0f", "#db2777",
  "#57606a", "#b45309", "#0f766e", "#7c3aed"];

/** The metrics a history reports, in the order they first appear. */
function metricNames(history) {
  const names = [];
  for (const entry of history) {
    for (const key of Object.keys(entry)) if (!AXES.has(key) && !names.includes(key)) names.push(key);
  }
  return names;
}

/** The axis a metric is drawn on: the epoch when every entry with it has one, else the step. */
function axisOf(history, name) {
  return history.filter((e) => name in e).every((e) => typeof e.epoch === "number") ? "epoch" : "step";
}

/** A metric's points on ``axis`` as a Map x -> y (null where not a finite number); a later report of the same x
    wins. */
function metricPoints(history, name, axis) {
  const byX = new Map();
  for (const entry of history) {
    if (!(name in entry) || typeof entry[axis] !== "number") continue;
    byX.delete(entry[axis]);
    byX.set(entry[axis], typeof entry[name] === "number" && isFinite(entry[name]) ? entry[name] : null);
  }
  return byX;
}

/** Where a metric was not finite, as a Map x -> "NaN" | "Infinity" | "-Infinity" (a later report of the same x
    wins, as in ``metricPoints``). */
function nonFinitePoints(history, name, axis) {
  const byX = new Map();
  for (const entry of history) {
    if (!(name in entry) || typeof entry[axis] !== "number") continue;
    if (isNonFinite(entry[name])) byX.set(entry[axis], String(entry[name]));
    else byX.delete(entry[axis]);
  }
  return byX;
}

/** The marker series of a curve: at each x where the metric was not finite, a point at the top of the finite
    values (NaN, +Infinity) or at their bottom (-Infinity), so it shows where the line stops; null elsewhere. */
function nonFiniteMarks(xs, ys, marks) {
  const finite = ys.filter((y) => typeof y === "number");
  const top = finite.length ? Math.max(...finite) : 0, bottom = finite.length ? Math.min(...finite) : 0;
  return xs.map((x) => (marks.has(x) ? (marks.get(x) === "-Infinity" ? bottom : top) : null));
}

/** A value axis's tick labels (uPlot's ``axes[].values``) with as many decimals as the step between ticks needs,
    so ticks 0.0105 and 0.011 never both read "0.011". */
function tickLabels(u, splits, axisIdx, foundSpace, foundIncr) {
  const labels = tickTexts(splits, foundIncr);
  if (u && u.root) u.root.dataset.yTicks = labels.join("|");  // the canvas has no text to read: say it here
  return labels;
}

/** A log axis's tick labels (uPlot's ``axes[].values``) as written: 0.0001, not uPlot's rounded "0". */
function logTickLabels(u, splits) {
  return splits.map((v) => (v == null ? "" : String(Number(v.toPrecision(3)))));
}

function tickTexts(splits, foundIncr) {
  const step = Math.abs(foundIncr || (splits.length > 1 ? splits[1] - splits[0] : 0));
  if (!step || !isFinite(step)) return splits.map((v) => (v === null ? "" : String(v)));
  const largest = Math.max(...splits.map((v) => Math.abs(v)));
  if (largest >= 1e6) {  // 1.25e+6, 1.50e+6: the mantissa's decimals by the step, as below
    const digits = decimalsOf(step / 10 ** Math.floor(Math.log10(largest)));
    return splits.map((v) => v.toExponential(digits));
  }
  return splits.map((v) => v.toFixed(decimalsOf(step)));
}

/** The fewest decimals that write ``step`` exactly (0.25: 2, 0.0005: 4, 20: 0), at most 12. */
function decimalsOf(step) {
  let decimals = Math.max(0, -Math.floor(Math.log10(step)));
  while (decimals < 12 && Math.abs(Math.round(step * 10 ** decimals) - step * 10 ** decimals) > 1e-6) decimals += 1;
  return decimals;
}

function chartWidth(el) {
  return Math.max(200, el.clientWidth || 300);
}
