/* The compare page: several jobs side by side. One chart per metric with a line per job (its colour and name in
   the legend), on the epoch or step axis, linear or log; the final metrics with the best of each marked; the
   params with the differing ones highlighted. Jobs still active are polled (ETags) and their lines grow. */
"use strict";

const data = JSON.parse(document.getElementById("initial").textContent);
const ENDED = new Set(data.ended);  // the terminal statuses, from the server: a job in one changes no more
const CHART_HEIGHT = 220;

const state = {
  jobs: data.jobs,
  resources: data.jobs.map((job) => new Resource(`/api/training/${job.id}`)),
  charts: new Map(),  // metric -> {el, plot, key}
};
const axisSelect = document.getElementById("axis");
const logScale = document.getElementById("log-scale");
const hideEqual = document.getElementById("hide-equal");

function colour(index) {
  return COLOURS[index % COLOURS.length];
}

function swatch(index) {
  return h("span", {class: "swatch", style: `background:${colour(index)}`, "aria-hidden": "true"});
}

function renderLegend() {
  document.getElementById("legend").replaceChildren(...state.jobs.map((job, index) => h("li", {"data-job-id": job.id},
    swatch(index), h("a", {href: `/jobs/${job.id}`}, job.name), " ", statusBadge(job.status), " ",
    h("span", {class: "muted"}, `${job.task} · ${job.id.slice(0, 8)} · `),
    h("a", {href: `/api/training/${job.id}/history?format=csv`, download: ""}, "CSV"), " ",
    h("a", {href: `/api/training/${job.id}/history?format=json`, download: ""}, "JSON"))));
}

// ---------------------------------------------------------------- curves

/** Every metric any job reports, in the order they first appear. */
function allMetrics() {
  const names = [];
  for (const job of state.jobs) for (const name of metricNames(job.history || [])) {
    if (!names.includes(name)) names.push(name);
  }
  return names;
}

/** One metric's data for uPlot: the x values every job has, and per job its y at each (null where it has none,
    or, on a log scale, where the value is not above 0). Step-only metrics stay on the step axis. */
function chartData(name) {
  const wanted = axisSelect.value;
  const histories = state.jobs.map((job) => job.history || []);
  const hasEpochs = histories.every((history) => !history.some((e) => name in e) || axisOf(history, name) === "epoch");
  const axis = wanted === "epoch" && !hasEpochs ? "step" : wanted;
  const points = histories.map((history) => metricPoints(history, name, axis));
  const xs = [...new Set(points.flatMap((p) => [...p.keys()]))].sort((a, b) => a - b);
  const log = logScale.checked;
  const ys = points.map((p) => xs.map((x) => {
    const y = p.has(x) ? p.get(x) : null;
    return y === null || (log && y <= 0) ? null : y;
  }));
  // where a job's line stops because the metric was NaN or infinite: said under the chart, never a silent gap
  const bad = histories.map((history) => nonFinitePoints(history, name, axis));
  return {axis, xs, ys, bad, lines: ys.filter((line) => line.some((y) => y !== null)).length};
}

function makeChart(el, name, axis) {
  return new uPlot({
    title: name, width: chartWidth(el), height: CHART_HEIGHT,
    scales: {x: {time: false}, y: logScale.checked ? {distr: 3} : {}},
    axes: [{label: axis, incrs: WHOLE_STEPS}, {size: 60, values: logScale.checked ? logTickLabels : tickLabels}],
    series: [{label: axis}, ...state.jobs.map((job, index) => ({
      label: job.name, stroke: colour(index), width: 2, spanGaps: true, points: {show: axis === "epoch", size: 5},
      value: (u, v) => (v === null || v === undefined ? "–" : fmtMetric(name, v)),
    }))],
  }, [[], ...state.jobs.map(() => [])], el);
}

function renderCurves() {
  const box = document.getElementById("charts");
  const names = allMetrics();
  document.getElementById("curves-empty").hidden = names.length > 0;
  for (const name of names) {
    const series = chartData(name);
    const key = `${series.axis}|${logScale.checked}`;
    let chart = state.charts.get(name);
    if (chart && chart.key !== key) {  // another axis or scale: drawn afresh
      chart.plot.destroy();
      chart.plot = null;
    }
    if (!chart) {
      chart = {el: h("div", {class: "chart", "data-metric": name, role: "img"})};
      box.append(chart.el);
      state.charts.set(name, chart);
    }
    if (!chart.plot) {
      chart.plot = makeChart(chart.el, name, series.axis);
      chart.key = key;
    }
    chart.plot.setData([series.xs, ...series.ys]);
    chart.el.dataset.lines = String(series.lines);
    chart.el.dataset.points = String(series.ys.flat().filter((y) => y !== null).length);
    chart.el.dataset.axis = series.axis;
    chart.el.setAttribute("aria-label", `${name} per ${series.axis}, ${series.lines} jobs`);
    renderNonFinite(chart.el, name, series);
  }
  document.getElementById("curves-title").dataset.metrics = String(names.length);
}

function renderNonFinite(el, name, series) {
  const notes = series.bad.map((marks, index) => {
    if (!marks.size) return null;
    const [x, value] = [...marks.entries()].sort((a, b) => a[0] - b[0])[0];
    return h("li", {"data-job-id": state.jobs[index].id}, swatch(index),
      `${state.jobs[index].name}: ${name} became ${value} at ${series.axis} ${x}`);
  }).filter(Boolean);
  el.dataset.nonfinite = String(series.bad.reduce((sum, marks) => sum + marks.size, 0));
  let list = el.querySelector(".chart-note");
  if (!notes.length) {
    if (list) list.remove();
    return;
  }
  if (!list) {
    list = h("ul", {class: "chart-note nonfinite plain"});
    el.append(list);
  }
  list.replaceChildren(...notes);
}

new ResizeObserver(() => {
  for (const {el, plot} of state.charts.values()) if (plot) plot.setSize({width: chartWidth(el), height: CHART_HEIGHT});
}).observe(document.getElementById("charts"));

// ---------------------------------------------------------------- tables

// for a metric no compared job's task declared as its primary one (@task(metric=, mode=)): guessed by its name
const LOWER_IS_BETTER = /(loss|err|error|mse|mae|rmse|perplexity|seconds|time)$/i;

function headerRow(first) {
  return h("tr", {}, h("th", {scope: "col"}, first), state.jobs.map((job, index) =>
    h("th", {scope: "col", "data-job-id": job.id}, swatch(index), job.name)));
}

function renderFinalMetrics() {
  const names = [];
  for (const job of state.jobs) for (const name of Object.keys(job.metrics || {})) {
    if (!names.includes(name)) names.push(name);
  }
  names.sort();
  const rows = names.map((name) => {
    const values = state.jobs.map((job) => (job.metrics || {})[name]);
    // only completed jobs compete: a cancelled, failed or unfinished job's value is partial, never the best
    const numbers = values.filter((v, index) => typeof v === "number" && isFinite(v)
      && state.jobs[index].status === "completed");
    const declared = state.jobs.find((job) => job.metric === name && job.metric_mode);  // its task said which way
    const lower = declared ? declared.metric_mode === "min" : LOWER_IS_BETTER.test(name);
    const shown = values.filter((v) => v !== undefined && v !== null).length;  // a star needs something to beat
    const best = numbers.length && shown > 1 ? (lower ? Math.min(...numbers) : Math.max(...numbers)) : null;
    return h("tr", {"data-metric": name}, h("th", {scope: "row"}, name,
      h("span", {class: "muted direction"}, lower ? " (lower is better)" : " (higher is better)")),
    values.map((value, index) => {
      const job = state.jobs[index];
      const isBest = best !== null && value === best && job.status === "completed";
      const partial = value !== undefined && value !== null && job.status !== "completed";
      return h("td", {"data-job-id": job.id, class: [isBest ? "best" : null, partial ? "partial" : null,
        isNonFinite(value) ? "nonfinite" : null].filter(Boolean).join(" ") || null},
      fmtMetric(name, value), isBest ? h("span", {class: "best-mark", title: "best"}, " ★") : null,
      partial ? h("span", {class: "partial-mark", title: `${job.status}: its newest value, not a final one`},
        " (partial)") : null);
    }));
  });
  document.getElementById("final-metrics").replaceChildren(h("thead", {}, headerRow("Metric")),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", {colspan: state.jobs.length + 1, class: "muted"},
      "No metric reported yet."))));
}

/** JSON with sorted keys: equal values compare equal whatever order their keys came in. */
function canonical(value) {
  return JSON.stringify(value === undefined ? null : value, (key, v) => (v && typeof v === "object" &&
    !Array.isArray(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v));
}

function paramText(value) {
  if (value === undefined) return "(not set)";
  if (value === null) return "–";
  if (Array.isArray(value)) return value.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))).join(", ");
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function renderParams() {
  const order = data.params_order || [];
  const names = [...new Set(state.jobs.flatMap((job) => Object.keys(job.params || {})))];
  const rank = (name) => (order.includes(name) ? order.indexOf(name) : order.length);
  names.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  const rows = names.map((name) => {
    const values = state.jobs.map((job) => (job.params || {})[name]);
    const differs = new Set(values.map(canonical)).size > 1;
    return h("tr", {"data-param": name, class: differs ? "differs" : "same"},
      h("th", {scope: "row"}, name, differs ? h("span", {class: "visually-hidden"}, " (differs)") : null),
      values.map((value, index) => h("td", {"data-job-id": state.jobs[index].id}, paramText(value))));
  });
  const table = document.getElementById("params-table");
  table.replaceChildren(h("thead", {}, headerRow("Param")), h("tbody", {}, rows));
  table.classList.toggle("hide-equal", hideEqual.checked);
  table.dataset.differing = String(rows.filter((r) => r.classList.contains("differs")).length);
}

/** What ran each job, a row per field; a field that differs (another code version, say) is highlighted as a
    differing param is. */
function renderProvenance() {
  const rows = PROVENANCE.map(([key, label]) => {
    const values = state.jobs.map((job) => provenanceText(job, key));
    const differs = new Set(values).size > 1;
    return h("tr", {"data-field": key, class: differs ? "differs" : "same"},
      h("th", {scope: "row"}, label, differs ? h("span", {class: "visually-hidden"}, " (differs)") : null),
      values.map((value, index) => h("td", {"data-job-id": state.jobs[index].id}, value || "–")));
  });
  const table = document.getElementById("provenance-table");
  table.replaceChildren(h("thead", {}, headerRow("")), h("tbody", {}, rows));
  table.classList.toggle("hide-equal", hideEqual.checked);
  table.dataset.differing = String(rows.filter((r) => r.classList.contains("differs")).length);
}

function renderAll() {
  renderLegend();
  renderCurves();
  renderFinalMetrics();
  renderParams();
  renderProvenance();
}

// ---------------------------------------------------------------- options, kept in the URL, and live updates

function keepInUrl() {
  const params = new URLSearchParams(window.location.search);
  for (const [key, on, value] of [["axis", axisSelect.value !== "epoch", axisSelect.value],
    ["log", logScale.checked, "1"], ["hide_equal", hideEqual.checked, "1"]]) {
    if (on) params.set(key, value);
    else params.delete(key);
  }
  history.replaceState(null, "", `/compare?${params.toString().replace(/%2C/g, ",")}`);
}

{
  const params = new URLSearchParams(window.location.search);
  if (params.get("axis") === "step") axisSelect.value = "step";
  logScale.checked = params.get("log") === "1";
  hideEqual.checked = params.get("hide_equal") === "1";
}
axisSelect.addEventListener("change", () => { keepInUrl(); renderCurves(); });
logScale.addEventListener("change", () => { keepInUrl(); renderCurves(); });
hideEqual.addEventListener("change", () => {
  keepInUrl();
  document.getElementById("params-table").classList.toggle("hide-equal", hideEqual.checked);
  document.getElementById("provenance-table").classList.toggle("hide-equal", hideEqual.checked);
});

renderAll();

poll(async () => {  // only active jobs change (a finished one changes again only if someone restarts it)
  let changed = false;
  await Promise.all(state.jobs.map(async (job, index) => {
    if (ENDED.has(job.status)) return;
    const fresh = await state.resources[index].fetch();
    if (fresh) {
      state.jobs[index] = fresh;
      changed = true;
    }
  }));
  if (changed) renderAll();
});
