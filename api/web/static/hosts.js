/* The hosts page: each live host (GET /api/hosts, polled): its GPUs and the job holding each (linked), its CPUs
   and memory (total, reserved), the jobs it holds in its slots, the tasks it offers and when it was last seen. */
"use strict";

const hostsView = {
  body: JSON.parse(document.getElementById("initial").textContent),
  resource: new Resource("/api/hosts"),
  shown: null,  // the shape of the cards on the page (shape)
};

/** Megabytes as gigabytes, a decimal where it matters: 24576 -> "24", 1536 -> "1.5". */
function gb(mb) {
  return String(Number((mb / 1024).toFixed(mb < 10240 ? 1 : 0)));
}

/** "3 of 8 reserved", "4 of 24 GB reserved". */
function amountText(amount, fmt = String, unit = "") {
  return `${fmt(amount.reserved)} of ${fmt(amount.total)}${unit} reserved`;
}

function gpuRow(gpu) {
  const holder = gpu.job
    ? h("a", {href: `/jobs/${gpu.job}`, class: "gpu-job"}, gpu.job_name || gpu.job.slice(0, 8), " ",
      h("code", {class: "muted"}, gpu.job.slice(0, 8)))
    : h("span", {class: "muted"}, "free");
  return h("tr", {"data-gpu": gpu.index, "data-job-id": gpu.job || null, title: gpu.uuid},
    h("td", {"data-label": "GPU"}, String(gpu.index)),
    h("td", {"data-label": "Name"}, gpu.name),
    h("td", {"data-label": "Memory"}, `${gb(gpu.memory_mb)} GB`),
    h("td", {"data-label": "Job"}, holder));
}

function gpuTable(host) {
  if (!host.gpus.length) return h("p", {class: "muted no-gpus"}, "No GPUs offered.");
  return h("table", {class: "gpus"},
    h("caption", {class: "visually-hidden"}, `GPUs of ${host.name}`),
    h("thead", {}, h("tr", {}, h("th", {}, "GPU"), h("th", {}, "Name"), h("th", {}, "Memory"), h("th", {}, "Job"))),
    h("tbody", {}, host.gpus.map(gpuRow)));
}

function hostCard(host) {
  const free = host.gpus.filter((g) => !g.job).length;
  const gpus = host.gpus.length ? `${free} of ${host.gpus.length} free${host.fake_gpus ? " (fake GPUs)" : ""}` : "none";
  return h("section", {class: "card host", "data-host": host.name, "aria-label": `Host ${host.name}`},
    h("h2", {}, host.name), " ", h("span", {class: "muted hostname"}, host.hostname),
    h("dl", {class: "details host-details"},
      h("dt", {}, "GPUs"), h("dd", {class: "h-gpus"}, gpus),
      h("dt", {}, "CPUs"), h("dd", {class: "h-cpus"}, amountText(host.cpus)),
      h("dt", {}, "Memory"), h("dd", {class: "h-memory"}, amountText(host.memory_mb, gb, " GB")),
      h("dt", {}, "Jobs"), h("dd", {class: "h-jobs"}, `${host.jobs} in ${host.slots} slot${host.slots === 1 ? "" : "s"}`),
      h("dt", {}, "Tasks"), h("dd", {class: "h-tasks"}, host.tasks.length ? host.tasks.join(", ") : "none"),
      ...(host.paused && Object.keys(host.paused).length ? [h("dt", {}, "Paused"), h("dd", {class: "h-paused"},
        Object.entries(host.paused).map(([worker, why]) => h("div", {}, `${worker}: ${why}`)))] : []),
      h("dt", {}, "Last seen"), h("dd", {class: "h-seen"}, fmtTime(host.seen_at)),
      h("dt", {}, "Started"), h("dd", {}, fmtTime(host.started_at))),
    gpuTable(host));
}

/** What a host's card shows but its last-seen time, which moves every second: that alone is updated in place. */
function shape(hosts) {
  return JSON.stringify(hosts.map((host) => ({...host, seen_at: null})));
}

function renderHosts() {
  const hosts = hostsView.body.hosts, box = document.getElementById("hosts");
  const now = shape(hosts);
  if (hostsView.shown !== now) {  // unchanged: leave the cards (a hovered link, a selection) alone
    box.replaceChildren(...hosts.map(hostCard));
    hostsView.shown = now;
  }
  for (const host of hosts) {
    const card = [...box.children].find((el) => el.dataset.host === host.name);
    if (card) card.querySelector(".h-seen").textContent = fmtTime(host.seen_at);
  }
  document.getElementById("no-hosts").hidden = hosts.length > 0;
}

renderHosts();
poll(async () => {
  const body = await hostsView.resource.fetch();
  if (body) {
    hostsView.body = body;
    renderHosts();
  }
});
