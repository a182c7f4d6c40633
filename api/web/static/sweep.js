/* A sweep's page: its state, its trials best first (the best marked), the objective against each searched param,
   every trial's objective curve on one chart (pruned trials dashed, cut short), "Compare top 5" (the compare page)
   and "Run again with best params" (the submit form, filled in). Polls the API while the sweep runs. */
"use strict";

const initial = JSON.parse(document.getElementById("initial").textContent);
const CHART_HEIGHT = 240;
const state = {sweep: initial.sweep, curves: initial.curves, drawn: {params: null, curves: null}, plots: []};
const sweepUrl = `/api/sweeps/${state.sweep.id}`;

function better(a, b) {  // sort key: objective best first, trials without one last, then by number
  const mode = state.sweep.objective.mode === "max" ? -1 : 1;
  const av = typeof a.objective === "number", bv = typeof b.objective === "number";
  if (av !== bv) return av ? -1 : 1;
  if (av && a.objective !== b.objective) return mode * (a.objective - b.objective);
  return a.number - b.number;
}

function ranked() {
  return [...state.sweep.trials].sort(better);
}

function paramText(value) {
  return typeof value === "number" ? fmtMetric("", value) : JSON.stringify(value);
}

function renderHeader() {
  const sweep = state.sweep;
  document.getElementById("sweep-state").replaceChildren(h("span", {class: `badge sweep-${sweep.state}`},
    sweep.state));
  const ended = sweep.trials.filter((t) => !["queued", "running", "paused"].includes(t.status)).length;
  document.getElementById("sweep-count").textContent =
    `${ended} of ${sweep.max_trials} trials ended, ${sweep.trials.length - ended} going`;
  document.getElementById("stop-reason").textContent = sweep.stop_reason || "";
  document.getElementById("stop-sweep").hidden = sweep.state !== "running";
  const best = sweep.best;
  const bestLine = document.getElementById("best-trial");
  const run = document.getElementById("run-best");
  if (best) {
    bestLine.replaceChildren("Best: ", h("a", {href: `/jobs/${best.job_id}`}, `trial ${best.number}`), " · ",
      `${sweep.objective.metric} ${fmtMetric(sweep.objective.metric, best.objective)} · `,
      Object.entries(best.params).map(([k, v]) => `${k}=${paramText(v)}`).join(" "));
    run.href = `/?clone=${best.job_id}`;
  } else {
    bestLine.textContent = "No trial has completed with the objective yet.";
  }
  run.hidden = !best;
  const top = ranked().filter((t) => t.status === "completed" && typeof t.objective === "number").slice(0, 5);
  const compare = document.getElementById("compare-top");
  compare.hidden = top.length === 0;
  compare.href = `/compare?ids=${top.map((t) => t.job_id).join(",")}`;
  compare.textContent = top.length === 5 ? "Compare top 5" : `Compare top ${top.length}`;
}

function renderTrials() {
  const names = Object.keys(state.sweep.space);
  const metric = state.sweep.objective.metric;
  document.getElementById("trials-head").replaceChildren(...["", "trial", "status", metric, ...names, "note", "job"]
    .map((label) => h("th", {}, label)));
  const bestNumber = state.sweep.best ? state.sweep.best.number : null;
  document.getElementById("trial-rows").replaceChildren(...ranked().map((t) => h("tr", {
    "data-trial": t.number, class: t.number === bestNumber ? "best-trial" : null},
  h("td", {"data-label": "Best"}, t.number === bestNumber ? h("span", {title: "the best trial", "aria-label": "best"},
    "★") : ""),
  h("td", {"data-label": "Trial"}, String(t.number)),
  h("td", {"data-label": "Status"}, statusBadge(t.status)),
  h("td", {class: "num", "data-label": metric}, fmtMetric(metric, t.objective)),
  ...names.map((name) => h("td", {class: "num", "data-label": name}, paramText(t.params[name]))),
  h("td", {class: "muted", "data-label": "Note"}, ["failed", "pruned"].includes(t.status) ? (t.status_reason || "")
    : ""),
  h("td", {"data-label": "Job"}, h("a", {href: `/jobs/${t.job_id}`}, t.job_id.slice(0, 8))))));
}

function destroyPlots(kind) {
  state.plots = state.plots.filter((p) => {
    if (p.kind !== kind) return true;
    p.plot.destroy();
    return false;
  });
}

/** One scatter per searched param: x the param's value (a choice's index, labelled), y the objective. */
function renderParamCharts() {
  const key = JSON.stringify(state.sweep.trials.map((t) => [t.number, t.objective, t.params]));
  if (key === state.drawn.params) return;
  state.drawn.params = key;
  destroyPlots("param");
  const box = document.getElementById("param-charts");
  box.replaceChildren();
  const metric = state.sweep.objective.metric;
  const bestNumber = state.sweep.best ? state.sweep.best.number : null;
  for (const [name, spec] of Object.entries(state.sweep.space)) {
    const choices = spec.type === "choice" ? spec.choices.map((c) => JSON.stringify(c)) : null;
    const points = state.sweep.trials.filter((t) => typeof t.objective === "number" && name in t.params)
      .map((t) => [choices ? choices.indexOf(JSON.stringify(t.params[name])) : t.params[name], t.objective,
        t.number === bestNumber])
      .sort((a, b) => a[0] - b[0]);
    const el = h("div", {class: "chart", "data-param": name, "data-points": points.length,
      "data-best-x": points.filter((p) => p[2]).map((p) => p[0]).join(",")});
    box.append(el);
    const xs = points.map((p) => p[0]);
    const log = spec.log === true;
    const plot = new uPlot({
      title: `${metric} against ${name}`, width: chartWidth(el), height: CHART_HEIGHT,
      scales: {x: {time: false, ...(log ? {distr: 3} : {})}},
      axes: [{label: name, ...(choices ? {values: (u, ticks) => ticks.map((v) => (Number.isInteger(v) &&
        choices[v] !== undefined ? choices[v] : ""))} : log ? {values: logTickLabels} : {})},
      {size: 60}],
      series: [{label: name}, {label: "trial", stroke: COLOURS[0], paths: () => null, points: {show: true, size: 7}},
        {label: "best", stroke: COLOURS[4], paths: () => null, points: {show: true, size: 14, width: 2,
          fill: "transparent"}}],
    }, [xs, points.map((p) => p[1]), points.map((p) => (p[2] ? p[1] : null))], el);
    state.plots.push({kind: "param", plot});
  }
}

/** Every trial's objective on one chart: a line per trial on the epoch (or step) axis. */
function renderCurves() {
  const key = JSON.stringify([state.curves, state.sweep.best && state.sweep.best.number]);
  if (key === state.drawn.curves) return;
  state.drawn.curves = key;
  destroyPlots("curves");
  const box = document.getElementById("curve-chart");
  box.replaceChildren();
  const curves = state.curves.curves.filter((c) => c.points.length);
  document.getElementById("curves-empty").hidden = curves.length > 0;
  if (!curves.length) return;
  const axis = curves.every((c) => c.axis === "epoch") ? "epoch" : "step";
  const xs = [...new Set(curves.flatMap((c) => c.points.map((p) => p[0])))].sort((a, b) => a - b);
  const ys = curves.map((c) => {
    const byX = new Map(c.points.map((p) => [p[0], p[1]]));
    return xs.map((x) => (byX.has(x) ? byX.get(x) : null));
  });
  const bestNumber = state.sweep.best ? state.sweep.best.number : null;
  const el = h("div", {class: "chart", id: "curves", "data-lines": curves.length, "data-axis": axis,
    "data-dashed": curves.filter((c) => c.status === "pruned").length,
    "data-longest": Math.max(...curves.map((c) => c.points.length))});
  box.append(el);
  const metric = state.curves.metric;
  const plot = new uPlot({
    title: metric, width: chartWidth(el), height: CHART_HEIGHT + 60,
    scales: {x: {time: false}},
    axes: [{label: axis, incrs: WHOLE_STEPS}, {size: 60}],
    series: [{label: axis}, ...curves.map((c, index) => ({
      label: `trial ${c.number} (${c.status})`, stroke: COLOURS[index % COLOURS.length], spanGaps: true,
      width: c.number === bestNumber ? 3.5 : 1.5, dash: c.status === "pruned" ? [6, 4] : undefined,
      points: {show: axis === "epoch", size: 4},
      value: (u, v) => (v === null || v === undefined ? "–" : fmtMetric(metric, v)),
    }))],
  }, [xs, ...ys], el);
  state.plots.push({kind: "curves", plot});
}

function render() {
  renderHeader();
  renderTrials();
  renderParamCharts();
  renderCurves();
}

document.getElementById("stop-sweep").addEventListener("click", async () => {
  const message = document.getElementById("action-message");
  try {
    const answer = await callApi("DELETE", sweepUrl);
    state.sweep = answer.sweep;
    message.textContent = answer.message;
    render();
  } catch (err) {
    message.textContent = err.message;
  }
});

const sweepResource = new Resource(sweepUrl);
const curvesResource = new Resource(`${sweepUrl}/curves`);
render();
poll(async () => {
  if (state.sweep.state !== "running" && state.drawn.final) return;  // ended and drawn: it changes no more
  const [sweep, curves] = await Promise.all([sweepResource.fetch(), curvesResource.fetch()]);
  if (sweep) state.sweep = sweep;
  if (curves) state.curves = curves;
  if (state.sweep.state !== "running") state.drawn.final = true;
  render();
});
