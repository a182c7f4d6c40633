// The webhooks page: register a hook (its secret shown once), enable, disable or delete one, see each hook's
// deliveries and send one again. Every call goes through the JSON API with the tab's token (monitor.js's callApi:
// JSON, Authorization: Bearer from sessionStorage, no cookie; a refused token goes to the login page and back).
"use strict";

const initialHooks = JSON.parse(document.getElementById("initial").textContent);
const message = document.getElementById("hook-message");

function say(text, isError) {
  message.textContent = text;
  message.className = isError ? "form-error" : "";
}

async function act(promise, done) {
  try {
    await promise;
    say(done, false);
  } catch (err) {
    say(err.message, true);
  }
  await refresh();
}

function deliveryRow(hook, d) {
  const again = h("button", {type: "button", class: "send-again", "data-delivery": d.id,
                             onclick: () => act(callApi("POST", `/api/webhooks/${hook.id}/deliveries/${d.id}/send-again`),
                                                `delivery ${d.id.slice(0, 8)} queued again`)}, "Send again");
  return h("tr", {"data-delivery": d.id},
    h("td", null, d.event), h("td", null, d.job_id ? h("a", {href: `/jobs/${d.job_id}`}, d.job_id.slice(0, 8))
      : d.sweep_id ? h("a", {href: `/sweeps/${d.sweep_id}`}, `sweep ${d.sweep_id.slice(0, 8)}`) : "-"),
    h("td", {class: `delivery-${d.status}`}, d.status), h("td", null, String(d.attempts)),
    h("td", null, d.last_status_code === null ? "-" : String(d.last_status_code)),
    h("td", null, d.last_error || ""), h("td", null, d.last_attempt_at || "-"), h("td", null, again));
}

function hookCard(hook, deliveries) {
  const toggle = h("button", {type: "button", class: "toggle",
                              onclick: () => act(callApi("PATCH", `/api/webhooks/${hook.id}`, {enabled: !hook.enabled}),
                                                 `webhook ${hook.id} ${hook.enabled ? "disabled" : "enabled"}`)},
                   hook.enabled ? "Disable" : "Enable");
  const remove = h("button", {type: "button", class: "danger",
                              onclick: () => window.confirm(`Delete webhook ${hook.id} and its deliveries?`) &&
                                act(callApi("DELETE", `/api/webhooks/${hook.id}`), `webhook ${hook.id} deleted`)},
                   "Delete");
  const where = [hook.filter.task ? `task ${hook.filter.task}` : null,
                 hook.filter.owner ? `owner ${hook.filter.owner}` : "every owner"].filter(Boolean).join(", ");
  return h("article", {class: "hook", "data-hook": hook.id},
    h("h3", null, `#${hook.id} `, h("code", null, hook.url)),
    h("p", null, `${hook.events.join(", ")} · ${where} · ${hook.format} · by ${hook.owner} · `,
      h("strong", {class: "hook-state"}, hook.enabled ? "enabled" : `disabled: ${hook.disabled_reason || ""}`)),
    h("div", {class: "actions"}, toggle, remove),
    deliveries.length ? h("div", {class: "table-scroll"}, h("table", {class: "compare deliveries"},
      h("thead", null, h("tr", null, ...["Event", "Job", "Status", "Tries", "Code", "Last error", "Last try", ""]
        .map((t) => h("th", null, t)))),
      h("tbody", null, ...deliveries.map((d) => deliveryRow(hook, d)))))
      : h("p", {class: "muted"}, "No deliveries yet."));
}

function render(hooks, deliveries) {
  const box = document.getElementById("hooks");
  box.replaceChildren(...(hooks.length ? hooks.map((hook) => hookCard(hook, deliveries[hook.id] || []))
                                       : [h("p", {class: "muted"}, "No webhooks yet.")]));
}

async function refresh() {
  const {webhooks} = await callApi("GET", "/api/webhooks");
  const deliveries = {};
  for (const hook of webhooks) {
    deliveries[hook.id] = (await callApi("GET", `/api/webhooks/${hook.id}/deliveries`)).deliveries.slice(0, 20);
  }
  render(webhooks, deliveries);
}

document.getElementById("new-hook").addEventListener("submit", async (event) => {
  event.preventDefault();
  const events = [...document.querySelectorAll("input[name=events]:checked")].map((box) => box.value);
  const filter = {};
  const task = document.getElementById("hook-task").value.trim();
  const owner = (document.getElementById("hook-owner") || {value: ""}).value.trim();
  if (task) filter.task = task;
  if (owner) filter.owner = owner;
  try {
    const created = await callApi("POST", "/api/webhooks", {url: document.getElementById("hook-url").value.trim(),
      events, filter, format: document.getElementById("hook-format").value});
    const secret = document.getElementById("hook-secret");
    secret.replaceChildren("Secret (shown once, keep it now): ", h("code", {id: "new-secret"}, created.secret));
    secret.hidden = false;
    say(`webhook ${created.webhook.id} added`, false);
  } catch (err) {
    say(err.message, true);
  }
  await refresh();
});

render(initialHooks.webhooks, initialHooks.deliveries);
