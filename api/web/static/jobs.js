/* The jobs page: the list (live, filtered and sorted as the API allows, paged by its cursor, jobs selected for the
   compare page) and the submit form, generated from the params JSON Schema the chosen task's workers published
   (GET /api/tasks), with the job's resources (GPUs, CPUs, memory), filled in from another job for "Run again". */
"use strict";

const rows = document.getElementById("job-rows");
const filter = document.getElementById("status-filter");
const taskFilter = document.getElementById("task-filter");
const older = document.getElementById("older");
const newer = document.getElementById("newer");
const form = document.getElementById("submit-form");
const panel = document.getElementById("submit-panel");

/** The filter inputs, by the API's parameter each sets (sort is the metric's input with the order's sign). */
const FILTER_INPUTS = {name: "name-filter", owner: "owner-filter", since: "since-filter", until: "until-filter",
  sweep: "sweep-filter"};
const sortMetric = document.getElementById("sort-metric");
const sortOrder = document.getElementById("sort-order");

const view = {
  status: filter.value,
  task: taskFilter.value,
  filters: {},  // name, owner, since, until, sort: as the inputs say (read by readFilters)
  selected: new Map(JSON.parse(sessionStorage.getItem("trainq-selected") || "[]")),  // id -> name, in order chosen
  cursors: [],  // the cursors of the pages before this one; the last is this page's
  page: JSON.parse(document.getElementById("initial").textContent),
  receivedAt: performance.now(),
  resource: null,
};

function readFilters() {
  view.status = filter.value;
  view.task = taskFilter.value;
  view.filters = Object.fromEntries(Object.entries(FILTER_INPUTS).map(([key, id]) =>
    [key, document.getElementById(id).value.trim()]));
  const metric = sortMetric.value.trim();
  view.filters.sort = metric ? `${sortOrder.value}${metric}` : "";
}

function filterParams() {
  const params = new URLSearchParams();
  if (view.status) params.set("status", view.status);
  if (view.task) params.set("task", view.task);
  for (const [key, value] of Object.entries(view.filters)) if (value) params.set(key, value);
  return params;
}

function listUrl() {
  const params = filterParams();
  const cursor = view.cursors[view.cursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  const query = params.toString();
  return "/api/training" + (query ? `?${query}` : "");
}

function heartbeatCell(job) {
  return job.status === "running" ? heartbeatText(job, view.receivedAt) : "–";
}

const SHOWN_METRICS = 3;

/** The job's primary metric (its task's declaration, recorded at submit): "name value", or "–". */
function primaryCell(job) {
  if (!job.metric) return "–";
  const value = (job.metrics || {})[job.metric];
  return h("span", {class: "metric", title: `${job.metric}: ${job.metric_mode === "max" ? "higher" : "lower"} is better`},
    h("span", {class: "metric-name"}, job.metric), " ", value === undefined ? "–" : fmtMetric(job.metric, value));
}

/** The job's other latest metrics, validation ones first, as "name value" items. */
function metricsCell(job) {
  const entries = Object.entries(job.metrics || {}).filter(([name]) => name !== job.metric);
  entries.sort(([a], [b]) => Number(!a.startsWith("val")) - Number(!b.startsWith("val")));
  if (!entries.length) return "–";
  const shown = entries.slice(0, SHOWN_METRICS).map(([name, value]) =>
    h("span", {class: "metric"}, h("span", {class: "metric-name"}, name), " ", fmtMetric(name, value)));
  return h("div", {class: "metrics", title: entries.map(([n, v]) => `${n} ${fmtMetric(n, v)}`).join("\n")},
    shown, entries.length > SHOWN_METRICS ? h("span", {class: "muted"}, `+${entries.length - SHOWN_METRICS}`) : null);
}

function selectCell(job) {
  return h("td", {"data-label": "Compare", class: "select"}, h("input", {type: "checkbox", class: "select-job",
    "aria-label": `Select ${job.name} to compare`, checked: view.selected.has(job.id),
    onchange: (event) => {
      if (event.target.checked) view.selected.set(job.id, job.name);
      else view.selected.delete(job.id);
      renderSelection();
    }}));
}

/** How many jobs are chosen (on any page, under any filter) and the compare page's link for them. */
function renderSelection() {
  sessionStorage.setItem("trainq-selected", JSON.stringify([...view.selected]));
  const count = view.selected.size, link = document.getElementById("compare-link");
  const ids = [...view.selected.keys()];
  document.getElementById("selected-count").textContent = count
    ? `${count} selected: ${[...view.selected.values()].join(", ")}` : "Select jobs to compare them.";
  link.href = `/compare?ids=${ids.join(",")}`;
  link.setAttribute("aria-disabled", String(count < 2));
  link.textContent = count >= 2 ? `Compare ${count} jobs` : "Compare";
  document.getElementById("clear-selection").hidden = count === 0;
}

function jobRow(job) {
  return h("tr", {"data-job-id": job.id, "data-status": job.status, "data-task": job.task},
    selectCell(job),
    h("td", {"data-label": "Name"}, h("a", {href: `/jobs/${job.id}`}, job.name),
      h("div", {class: "muted owner"}, job.owner || "")),
    h("td", {"data-label": "Task", class: "task"}, job.task),
    h("td", {"data-label": "Status"}, h("div", {}, statusBadge(job.status), " ", staleBadge(job),
      job.status_reason ? h("div", {class: "reason", title: job.status_reason}, job.status_reason) : null)),
    h("td", {"data-label": "Progress"}, progressBar(job)),
    h("td", {"data-label": "Metric", class: "primary-metric"}, primaryCell(job)),
    h("td", {"data-label": "Metrics"}, metricsCell(job)),
    h("td", {"data-label": "Started", class: "started"}, fmtTime(job.first_started_at || job.started_at)),
    h("td", {"data-label": "Duration", class: "duration"}, fmtDuration(trainedFor(job))),
    h("td", {"data-label": "Heartbeat", class: "heartbeat"}, heartbeatCell(job)));
}

function emptyText() {
  const what = [view.task ? `${view.task} jobs` : "jobs", view.status ? `with status ${view.status}` : null];
  const more = Object.values(view.filters).some(Boolean) ? " match these filters" : " yet";
  return `No ${what.filter(Boolean).join(" ")}${more}.`;
}

/** The metric names the listed jobs report, offered to the sort input. */
function renderMetricNames() {
  const box = document.getElementById("metric-names");
  const names = new Set(Array.from(box.options, (o) => o.value));
  for (const job of view.page.jobs) {
    for (const name of Object.keys(job.metrics || {})) {
      if (!names.has(name)) {
        names.add(name);
        box.append(h("option", {value: name}));
      }
    }
  }
}

function render() {
  rows.replaceChildren(...view.page.jobs.map(jobRow));
  const empty = document.getElementById("empty");
  empty.hidden = view.page.jobs.length > 0;
  empty.textContent = emptyText();
  older.disabled = !view.page.next_cursor;
  newer.disabled = view.cursors.length === 0;
  renderMetricNames();
}

/** Between changes only the clocks move: update those cells in place (no re-render, no flicker). */
function tickClocks() {
  for (const job of view.page.jobs) {
    const tr = rows.querySelector(`tr[data-job-id="${job.id}"]`);
    if (!tr) continue;
    tr.querySelector(".duration").textContent = fmtDuration(trainedFor(job));
    tr.querySelector(".heartbeat").textContent = heartbeatCell(job);
  }
}

function navigate() {
  view.resource = new Resource(listUrl());
  const params = filterParams();
  history.replaceState(null, "", params.toString() ? `/?${params}` : "/");
  refresh();
}

readFilters();
view.resource = new Resource(listUrl());
render();
renderSelection();

const TASKS_EVERY = 5;  // while the form is open, the tasks (and their live workers) are re-read every 5th poll
let polls = 0;

const refresh = poll(async () => {
  const body = await view.resource.fetch();
  if (body) {
    view.page = body;
    view.receivedAt = performance.now();
    render();
  } else {
    tickClocks();
  }
  if (panel.open && ++polls % TASKS_EVERY === 0) await refreshTasks();
});

function applyFilters() {
  const before = listUrl();
  readFilters();
  view.cursors = [];
  if (listUrl() !== before || view.cursors.length) navigate();
}

/** Listing one task's jobs: its primary metric is the sort offered first (the metric input's suggestion, the order
    its mode says is best), never applied by itself: a metric sort lists only the jobs that reported it. */
function defaultSort() {
  const declared = (catalog.tasks || []).find((t) => t.name === taskFilter.value);
  sortMetric.placeholder = declared && declared.metric ? `e.g. ${declared.metric}` : "";
  if (!declared || !declared.metric || sortMetric.value.trim()) return;
  sortOrder.value = declared.metric_mode === "max" ? "-" : "";
}
taskFilter.addEventListener("change", defaultSort);

let typing = null;  // text filters apply as one types, once a pause says the word is done
for (const el of document.querySelectorAll("#filters input, #filters select")) {
  el.addEventListener("change", applyFilters);
  if (el.type === "search") {
    el.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(applyFilters, 300);
    });
  }
}
document.getElementById("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  applyFilters();
});
document.getElementById("clear-filters").addEventListener("click", () => {
  for (const el of document.querySelectorAll("#filters input")) el.value = "";
  filter.value = "";
  taskFilter.value = "";
  sortOrder.value = "";
  applyFilters();
});
document.getElementById("clear-selection").addEventListener("click", () => {
  view.selected.clear();
  for (const box of rows.querySelectorAll(".select-job")) box.checked = false;
  renderSelection();
});
document.getElementById("compare-link").addEventListener("click", (event) => {
  if (view.selected.size < 2) event.preventDefault();
});
older.addEventListener("click", () => {
  view.cursors.push(view.page.next_cursor);
  navigate();
});
newer.addEventListener("click", () => {
  view.cursors.pop();
  navigate();
});

// ---------------------------------------------------------------- params JSON Schema -> form fields

/** The schema ``ref`` ("#/$defs/Name") points at inside ``root``. */
function lookup(root, ref) {
  if (!ref.startsWith("#/")) return {};
  let node = root;
  for (const part of ref.slice(2).split("/")) {
    node = node && node[part.replace(/~1/g, "/").replace(/~0/g, "~")];
  }
  return node || {};
}

function without(schema, ...keys) {
  const copy = {...schema};
  for (const key of keys) delete copy[key];
  return copy;
}

/** One property's schema made plain: $ref and one-item allOf followed (the property's own default, title and
    description win), ``anyOf``/``oneOf`` with null read as ``nullable``, alternatives of constants as an enum. */
function resolve(schema, root) {
  let s = schema || {};
  let nullable = false;
  for (let depth = 0; depth < 16; depth += 1) {
    if (s.$ref) {
      s = {...resolve(lookup(root, s.$ref), root), ...without(s, "$ref")};
    } else if (Array.isArray(s.allOf) && s.allOf.length === 1) {
      s = {...resolve(s.allOf[0], root), ...without(s, "allOf")};
    } else if (Array.isArray(s.anyOf || s.oneOf)) {
      const alternatives = (s.anyOf || s.oneOf).map((a) => resolve(a, root));
      const others = alternatives.filter((a) => a.type !== "null");
      nullable = nullable || others.length < alternatives.length || others.some((a) => a.nullable);
      const rest = without(s, "anyOf", "oneOf");
      if (others.length === 1) s = {...others[0], ...rest};
      else if (others.length && others.every((a) => "const" in a || Array.isArray(a.enum))) {
        s = {...rest, enum: others.flatMap((a) => ("const" in a ? [a.const] : a.enum))};
      } else s = {...rest, type: "json"};
    } else if (Array.isArray(s.type)) {
      const types = s.type.filter((t) => t !== "null");
      nullable = nullable || types.length < s.type.length;
      s = {...s, type: types.length === 1 ? types[0] : "json"};
    } else {
      break;
    }
  }
  return {...s, nullable: nullable || Boolean(s.nullable)};
}

function kindOf(s) {
  if ("const" in s || Array.isArray(s.enum)) return "enum";
  if (s.type === "boolean") return "boolean";
  if (s.type === "integer" || s.type === "number") return "number";
  if (s.type === "string") return "string";
  if (s.type === "array" && s.items) {
    const items = s.itemSchema;
    if (["integer", "number", "string"].includes(items.type) || "const" in items || Array.isArray(items.enum)) {
      return "list";
    }
  }
  return "json";
}

function boundsText(s) {
  const lo = typeof s.minimum === "number" ? s.minimum : null, hi = typeof s.maximum === "number" ? s.maximum : null;
  if (lo !== null && hi !== null) return `${lo} to ${hi}`;
  const parts = [];
  if (lo !== null) parts.push(`≥ ${lo}`);
  if (typeof s.exclusiveMinimum === "number") parts.push(`> ${s.exclusiveMinimum}`);
  if (hi !== null) parts.push(`≤ ${hi}`);
  if (typeof s.exclusiveMaximum === "number") parts.push(`< ${s.exclusiveMaximum}`);
  return parts.join(", ");
}

/** What a field takes, in words, under its input: type, bounds, list length, then the description. */
function hintText(s, kind) {
  const parts = [];
  if (kind === "number") parts.push([s.type, boundsText(s)].filter(Boolean).join(" "));
  if (kind === "list") {
    const items = s.itemSchema;
    parts.push([`comma-separated ${items.type === "string" ? "strings" : `${items.type || "value"}s`}`,
      boundsText(items)].filter(Boolean).join(" "));
    parts.push(countText(s.minItems, s.maxItems, "items"));
  }
  if (kind === "string") {
    parts.push(countText(s.minLength, s.maxLength, "characters"));
  }
  if (kind === "json") parts.push("JSON");
  if (s.nullable) parts.push("empty: none");
  if (s.description) parts.push(s.description);
  return parts.filter(Boolean).join(" · ");
}

function countText(least, most, what) {
  const lo = typeof least === "number" ? least : null, hi = typeof most === "number" ? most : null;
  if (lo !== null && hi !== null) return `${lo} to ${hi} ${what}`;
  if (lo !== null) return `at least ${lo} ${what}`;
  return hi !== null ? `at most ${hi} ${what}` : null;
}

function listText(value) {
  return Array.isArray(value) ? value.join(", ") : "";
}

function inputFor(name, s, kind) {
  const id = `param-${name}`;
  const common = {id, name: `params.${name}`, "data-param": name, "data-kind": kind,
    "data-nullable": s.nullable ? "true" : null, "aria-describedby": `hint-param-${name} err-param-${name}`};
  const value = s.default;
  if (kind === "enum") {
    const options = "const" in s ? [s.const] : s.enum;
    const select = h("select", common,
      s.nullable ? h("option", {value: "null"}, "(none)") : null,
      options.map((option) => h("option", {value: JSON.stringify(option)}, String(option))));
    if ("default" in s) select.value = JSON.stringify(value);
    if (select.selectedIndex < 0) select.selectedIndex = 0;
    return select;
  }
  if (kind === "boolean") return h("input", {...common, type: "checkbox", checked: value === true});
  if (kind === "number") {
    const min = s.minimum ?? s.exclusiveMinimum, max = s.maximum ?? s.exclusiveMaximum;
    return h("input", {...common, type: "number", inputmode: s.type === "integer" ? "numeric" : "decimal",
      min, max, step: s.type === "integer" ? (s.multipleOf || 1) : (s.multipleOf || "any"),
      value: typeof value === "number" ? String(value) : null});
  }
  if (kind === "list") {
    const items = s.itemSchema;
    const numeric = items.type === "integer" || items.type === "number" ||
      (Array.isArray(items.enum) && items.enum.every((v) => typeof v === "number")) || typeof items.const === "number";
    return h("input", {...common, type: "text", inputmode: numeric ? "decimal" : null, "data-items": numeric ? "number" : "string",
      value: listText(value), placeholder: numeric ? "1, 2" : "a, b"});
  }
  if (kind === "string") return h("input", {...common, type: "text", value: typeof value === "string" ? value : null});
  return h("textarea", {...common, rows: 2}, value === undefined || value === null ? "" : JSON.stringify(value));
}

/** The params' names in the order the task declares them where the API says it (``params_order``), else by
    name (JSON keeps no key order on the way through PostgreSQL's JSONB and the API's sorted answers). */
function paramOrder(task, properties) {
  const order = Array.isArray(task.params_order) ? task.params_order : [];
  const rank = (name) => (order.includes(name) ? order.indexOf(name) : order.length);
  return Object.keys(properties).sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/** The fields of ``task``'s params, one per property of its schema, defaults filled in. */
function paramFields(task) {
  const root = task.params_schema || {};
  const properties = root.properties || {};
  const required = new Set(root.required || []);
  return paramOrder(task, properties).map((name) => [name, properties[name]]).map(([name, raw]) => {
    const s = resolve(raw, root);
    if (s.type === "array") s.itemSchema = resolve(s.items || {}, root);
    const kind = kindOf(s);
    const input = inputFor(name, s, kind);
    const label = h("label", {for: input.id}, name, required.has(name) ? h("span", {class: "muted"}, " (required)") : null);
    const hint = hintText(s, kind);
    return h("div", {class: `field field-${kind}`, "data-field": name},
      kind === "boolean" ? h("div", {class: "check"}, input, label) : [label, input],
      h("span", {class: "hint", id: `hint-param-${name}`}, hint),
      h("span", {class: "field-error", id: `err-param-${name}`, role: "alert"}));
  });
}

// ---------------------------------------------------------------- the submit form

const taskSelect = document.getElementById("task-select");
const catalog = {
  tasks: JSON.parse(document.getElementById("tasks").textContent).tasks,
  resource: new Resource("/api/tasks"),
  shownSchema: null,  // the schema the params fields were built from (JSON), so a refresh keeps what was typed
};

function currentTask() {
  return catalog.tasks.find((t) => t.name === taskSelect.value) || null;
}

function workersText(task) {
  if (task.workers === 0) {
    return [true, `No live worker offers ${task.name} right now: a job you submit waits queued until one does.`];
  }
  if (task.workers === null || task.workers === undefined) {
    return [true, "Whether a live worker offers this task is unknown right now (Redis unreachable)."];
  }
  return [false, `Offered by ${task.workers} live worker${task.workers === 1 ? "" : "s"}.`];
}

/** JSON with every object's keys sorted: the same schema compares equal whatever order its keys came in. */
function canonical(value) {
  return JSON.stringify(value, (key, v) => (v && typeof v === "object" && !Array.isArray(v)
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v));
}

function showTask(rebuild) {
  const task = currentTask();
  const note = document.getElementById("task-workers");
  document.getElementById("task-description").textContent = task ? task.description || "" :
    "No worker has published a task yet: start a worker (flask --app api worker), then reload.";
  form.querySelector("button[type=submit]").disabled = !task;
  if (task) {
    const [warn, text] = workersText(task);
    note.textContent = text;
    note.className = warn ? "note warn" : "note muted";
    note.hidden = false;
  } else {
    note.hidden = true;
  }
  document.getElementById("job-name").placeholder = task ? task.name : "";
  showResourceDefaults(task);
  const schema = task ? canonical(task.params_schema) : null;
  if (rebuild || schema !== catalog.shownSchema) {
    document.getElementById("param-list").replaceChildren(...(task ? paramFields(task) : []));
    document.getElementById("params-fields").hidden = !task || !Object.keys(task.params_schema.properties || {}).length;
    catalog.shownSchema = schema;
  }
  form.dataset.task = task ? task.name : "";
}

// ---------------------------------------------------------------- resources: GPUs, CPUs, memory

/** What a job gets when a resource field is left empty (trainq.resources.DEFAULTS), unless its task declares it. */
const RESOURCE_DEFAULTS = {gpus: 0, cpus: 1, memory_gb: null};
const RESOURCE_WORDS = {gpus: "whole GPUs, each to the job alone", cpus: "CPU cores: its threads follow them",
  memory_gb: "its processes are held to it"};
const resourceInputs = [...form.querySelectorAll("[data-resource]")];

/** Each resource field's placeholder and hint: what an empty field means for this task (its declared default). */
function showResourceDefaults(task) {
  const declared = (task && task.resources) || {};
  for (const input of resourceInputs) {
    const key = input.dataset.resource;
    const own = declared[key] !== undefined && declared[key] !== null;
    const value = own ? declared[key] : RESOURCE_DEFAULTS[key];
    input.placeholder = value === null ? "no limit" : String(value);
    const meaning = value === null ? "no limit" : String(value);
    document.getElementById(`hint-res-${key}`).textContent =
      `${RESOURCE_WORDS[key]} · empty: ${meaning}${own ? `, as task ${task.name} declares` : ""}`;
  }
}

/** The resource fields filled in, as the submit's ``resources`` (null when all are empty: the task's, then the
    defaults, apply). A value is sent as typed: the API judges it, and names the field. */
function resourcesPayload() {
  const resources = {};
  for (const input of resourceInputs) {
    const raw = input.value.trim();
    if (raw !== "") resources[input.dataset.resource] = Number(raw);
  }
  return Object.keys(resources).length ? resources : null;
}

function renderTaskOptions() {
  const chosen = taskSelect.value;
  const options = catalog.tasks.map((t) =>
    h("option", {value: t.name}, t.workers === 0 ? `${t.name} (no live worker)` : t.name));
  const shownNow = options.map((o) => `${o.value}:${o.textContent}`).join("|");
  if (taskSelect.dataset.shown !== shownNow) {  // unchanged: leave an open dropdown alone
    taskSelect.replaceChildren(...options);
    taskSelect.dataset.shown = shownNow;
    if (catalog.tasks.some((t) => t.name === chosen)) taskSelect.value = chosen;
  }
  const shown = new Set(Array.from(taskFilter.options, (o) => o.value));
  for (const t of catalog.tasks) if (!shown.has(t.name)) taskFilter.append(h("option", {value: t.name}, t.name));
}

/** The task to offer first: the one the list is filtered on, else the first a live worker offers. */
function firstTask() {
  const names = catalog.tasks.map((t) => t.name);
  if (names.includes(view.task)) return view.task;
  const live = catalog.tasks.find((t) => t.workers);
  return live ? live.name : names[0] || "";
}

async function refreshTasks() {
  const body = await catalog.resource.fetch();
  if (!body) return;
  catalog.tasks = body.tasks;
  renderTaskOptions();
  if (!taskSelect.value) taskSelect.value = firstTask();
  showTask(false);  // the same schema keeps the fields, and what was typed in them
  form.dataset.tasksRead = String((Number(form.dataset.tasksRead) || 0) + 1);
}

renderTaskOptions();
taskSelect.value = firstTask();
showTask(true);
taskSelect.addEventListener("change", () => {
  clearErrors();
  showTask(true);
});
panel.addEventListener("toggle", () => {
  if (panel.open) refreshTasks().catch(() => {});  // the poll's banner reports an unreachable API
});

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;

/** A list item as typed: a number where it looks like one (for a list of numbers), else the text. */
function typedItem(text, itemType) {
  return itemType !== "string" && NUMBER.test(text) ? Number(text) : text;
}

/** One field's value as JSON, as typed: the API, not this page, judges it (and names the field). An emptied
    field is null (none, where the param allows it; else the API says what it needs). */
function fieldValue(input) {
  const kind = input.dataset.kind;
  if (kind === "boolean") return input.checked;
  if (kind === "enum") return JSON.parse(input.value || "null");
  const raw = input.value, nullable = input.dataset.nullable === "true";
  if (kind === "number") return raw.trim() === "" ? null : Number(raw);
  if (kind === "string") return raw === "" && nullable ? null : raw;
  if (kind === "list") {
    if (raw.trim() === "") return nullable ? null : [];
    const items = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
    return items.map((s) => typedItem(s, input.dataset.items));
  }
  if (raw.trim() === "") return null;
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

function formPayload() {
  const params = {};
  for (const input of form.querySelectorAll("[data-param]")) params[input.dataset.param] = fieldValue(input);
  const name = document.getElementById("job-name").value.trim();
  const resources = resourcesPayload();
  const failOnNan = document.getElementById("fail-on-nan").checked;
  return {task: taskSelect.value, params, ...(name ? {name} : {}), ...(resources ? {resources} : {}),
    ...(clone ? {cloned_from: clone.id} : {}), ...(failOnNan ? {fail_on_nan: true} : {})};
}

// ---------------------------------------------------------------- "Run again": the form filled in from a job

const clone = JSON.parse(document.getElementById("clone").textContent);

/** Put ``value`` (as the API holds it) into a generated field, the reverse of ``fieldValue``. */
function fillField(input, value) {
  const kind = input.dataset.kind;
  if (kind === "boolean") input.checked = value === true;
  else if (kind === "enum") input.value = JSON.stringify(value === undefined ? null : value);
  else if (kind === "list") input.value = Array.isArray(value) ? value.join(", ") : "";
  else if (kind === "json") input.value = value === undefined || value === null ? "" : JSON.stringify(value);
  else input.value = value === undefined || value === null ? "" : String(value);
}

if (clone) {
  panel.open = true;
  const note = document.getElementById("clone-note");
  note.replaceChildren("Running again ", h("a", {href: `/jobs/${clone.id}`}, clone.name),
    ": its task and params are filled in; change what you want and submit. The new job links back to it.");
  note.hidden = false;
  if (catalog.tasks.some((t) => t.name === clone.task)) {
    taskSelect.value = clone.task;
    showTask(true);
    for (const input of form.querySelectorAll("[data-param]")) {
      if (input.dataset.param in clone.params) fillField(input, clone.params[input.dataset.param]);
    }
  } else {
    document.getElementById("err-task").textContent =
      `No worker has published task ${clone.task} (any more): the job cannot run again until one does.`;
  }
  document.getElementById("job-name").value = clone.name;
  for (const input of resourceInputs) {  // what the job asked, as it was resolved at its submit
    const value = (clone.resources || {})[input.dataset.resource];
    input.value = value === undefined || value === null ? "" : String(value);
  }
  panel.scrollIntoView();
}

function clearErrors() {
  form.querySelectorAll(".field-error, .form-error").forEach((el) => { el.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
}

/** The input and error slot an API error's ``field`` names: ``params.<name>`` and ``params.<name>.<index>``
    (a list's item) are the param ``<name>``; ``resources.<key>`` is that resource's; ``task`` and ``name`` are
    theirs. */
function slotFor(field, message) {
  if (field === "task") return [taskSelect, document.getElementById("err-task")];
  if (field === "name") return [document.getElementById("job-name"), document.getElementById("err-name")];
  const resource = /^resources\.([a-z_]+)$/.exec(field || "");
  if (resource && document.getElementById(`err-res-${resource[1]}`)) {
    return [document.getElementById(`res-${resource[1]}`), document.getElementById(`err-res-${resource[1]}`)];
  }
  let param = null;
  const match = /^params\.([^.]+)/.exec(field || "");
  if (match) param = match[1];
  else if (field === "params") {  // a required param left out: the message names it
    const required = /'([^']+)' is a required property/.exec(message);
    if (required) param = required[1];
  }
  const slot = param && document.getElementById(`err-param-${param}`);
  return slot ? [document.getElementById(`param-${param}`), slot] : [null, null];
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const body = await callApi("POST", "/api/training", formPayload());
    if (body.warning) sessionStorage.setItem(`trainq-warning-${body.job.id}`, body.warning);
    window.location.assign(`/jobs/${body.job.id}`);
  } catch (err) {
    const [input, slot] = slotFor(err.field, err.message);
    if (slot) {
      slot.textContent = err.message;
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
    } else {
      document.getElementById("err-form").textContent = err.message;
    }
  } finally {
    button.disabled = !currentTask();
  }
});
