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
  seconds = Math.max(0, Math.round(seconds));
  const hrs = Math.floor(seconds / 3600), mins = Math.floor(seconds / 60) % 60, secs = seconds % 60;
  return hrs ? `${hrs} h ${mins} min` : mins ? `${mins} min ${secs} s` : `${secs} s`;
}

/** How long a job has run: to its end, or (still going) to now. */
function duration(job) {
  if (!job.started_at) return null;
  return ((job.finished_at ? Date.parse(job.finished_at) : Date.now()) - Date.parse(job.started_at)) / 1000;
}

/** The heartbeat age the API gave, counted on from when that answer came (no clock skew involved). */
function heartbeatText(job, receivedAt) {
  if (typeof job.heartbeat_age_seconds !== "number") return "–";
  return `${fmtDuration(job.heartbeat_age_seconds + (performance.now() - receivedAt) / 1000)} ago`;
}

function progressBar(job) {
  const total = job.config && job.config.epochs;
  const done = Math.min(job.epoch || 0, total || 0);
  const label = total ? `epoch ${done} of ${total}` : "–";
  return h("div", {class: "progress"},
    h("progress", {max: total || 1, value: done, "aria-label": label}),
    h("span", {class: "progress-text"}, label));
}

/** A GET that remembers its ETag: resolves to the parsed body when it changed, null on 304. */
class Resource {
  constructor(url) {
    this.url = url;
    this.etag = null;
  }

  async fetch() {
    const headers = {Accept: "application/json"};
    if (this.etag) headers["If-None-Match"] = this.etag;
    const response = await fetch(this.url, {headers, cache: "no-store"});
    if (response.status === 304) return null;
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

/** A state-changing call: JSON in (so no cross-site form can make it), JSON out; throws ApiError. */
async function callApi(method, url, payload) {
  const init = {method, headers: {Accept: "application/json"}};
  if (payload !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(payload);
  }
  const response = await fetch(url, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** Run ``tick`` now and then every POLL_MS after each finishes (never two at once); show a banner while
    the API cannot be reached, and keep trying. */
function poll(tick) {
  const banner = document.getElementById("connection");
  let timer = null;
  async function run() {
    clearTimeout(timer);
    try {
      await tick();
      banner.hidden = true;
    } catch (err) {
      banner.textContent = `Cannot reach the API (${err.message}); retrying every second…`;
      banner.hidden = false;
    }
    timer = setTimeout(run, POLL_MS);
  }
  run();
  return run;  // call it to refresh at once (after an action)
}
