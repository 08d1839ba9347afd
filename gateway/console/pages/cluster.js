// Cluster: nodes (zone, weight, state, health, capacity, chunks), rebalance and repair
// progress updated live, hot objects, and the operator's actions, each confirmed and
// each showing the API's refusal when there is one.

import { api } from "../api.js";
import { el, show, bytes, duration, bar, errorBox, toast, confirmAction, every } from "../ui.js";
import { lineChart } from "../chart.js";

/// How often the page asks for the cluster's state.
const REFRESH_MS = 2000;
/// How often it asks for the traffic history (the gateway samples every 10 s).
const TRAFFIC_MS = 10000;

export function clusterPage() {
  const status = el("div", { id: "cluster-status" }, el("p", { class: "hint" }, "Loading…"));
  const actionsError = el("div", { id: "cluster-action-error" });
  const traffic = el("section", { id: "traffic" }, el("h2", {}, "Traffic through this gateway, last hour"),
    el("p", { class: "hint" }, "Loading…"));
  show(el("section", {},
    el("h1", {}, "Cluster"),
    actionsError,
    status,
    traffic,
    clusterActions(actionsError)));
  every(TRAFFIC_MS, async () => {
    try {
      traffic.replaceChildren(traffic.firstChild, ...charts(await api.traffic()));
    } catch (e) {
      traffic.replaceChildren(traffic.firstChild, errorBox(e));
    }
  });
  every(REFRESH_MS, async () => {
    try {
      status.replaceChildren(...render(await api.cluster(), actionsError));
    } catch (e) {
      status.replaceChildren(errorBox(e));
    }
  });
}

function charts(t) {
  const s = t.samples || [];
  if (!s.length) {
    return [el("p", { class: "hint" }, `No samples yet: the gateway takes one every ${t.interval_secs} s.`)];
  }
  const ts = s.map((x) => x.t_ms);
  const num = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  return [el("div", { class: "charts" },
    lineChart("Requests per second", ts, [{ name: "requests", cls: "a", values: s.map((x) => x.requests_per_sec) }], num),
    lineChart("Errors per second", ts, [
      { name: "5xx", cls: "b", values: s.map((x) => x.server_errors_per_sec) },
      { name: "4xx", cls: "c", values: s.map((x) => x.client_errors_per_sec) }], num),
    lineChart("Latency to the response head, ms", ts, [
      { name: "p50", cls: "a", values: s.map((x) => x.p50_ms) },
      { name: "p99", cls: "b", values: s.map((x) => x.p99_ms) }], num),
    lineChart("Object bytes per second", ts, [
      { name: "in", cls: "a", values: s.map((x) => x.bytes_in_per_sec) },
      { name: "out", cls: "c", values: s.map((x) => x.bytes_out_per_sec) }], (v) => `${bytes(v)}/s`))];
}

/// Runs an operator action; shows the API's error, or a notice when it succeeded.
async function act(errors, question, label, call, done) {
  if (!(await confirmAction(question, label))) return;
  errors.replaceChildren();
  try {
    await call();
    toast(done);
  } catch (e) {
    errors.replaceChildren(errorBox(e));
  }
}

function render(c, errors) {
  const r = c.rebalance || {};
  const total = (r.moved_bytes || 0) + (r.remaining_bytes || 0);
  const summary = el("div", { class: "cards" },
    el("div", { class: "card" }, el("h2", {}, "Map"),
      el("p", {}, `epoch ${c.epoch} · ${c.replicas} copies · ${c.nodes.length} nodes`)),
    el("div", { class: "card", id: "rebalance" }, el("h2", {}, "Rebalance and repair"),
      r.settled ? el("p", { class: "ok" }, "Settled: every copy is where the map puts it.")
        : el("div", {},
          bar(total ? r.moved_bytes / total : 0, "rebalance progress"),
          el("p", {}, `${r.running ? "moving" : "waiting"} · ${bytes(r.moved_bytes)} moved, `,
            `${bytes(r.remaining_bytes)} to scan · ${bytes(r.rate_bytes_per_sec)}/s · `,
            `ETA ${duration(r.eta_secs)} · ${r.pending_nodes} node(s) not done`))));
  const rows = c.nodes.map((n) => nodeRow(n, errors));
  const table = el("table", { id: "nodes" },
    el("caption", {}, "Nodes"),
    el("thead", {}, el("tr", {}, ...["Node", "Zone", "Weight", "State", "Health", "Capacity",
      "Chunks", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows));
  const hot = (c.hot || []).length
    ? el("table", { id: "hot" }, el("caption", {}, "Hot objects (extra copies while read often)"),
      el("thead", {}, el("tr", {}, el("th", {}, "Object"), el("th", {}, "Reads/s"), el("th", {}, "Extra copies"))),
      el("tbody", {}, c.hot.map((h) => el("tr", {}, el("td", {}, h.object),
        el("td", {}, h.reads_per_sec.toFixed(1)), el("td", {}, String(h.extra_copies))))))
    : el("p", { class: "hint" }, "No hot objects.");
  return [summary, el("div", { class: "scroll" }, table), hot];
}

function nodeRow(n, errors) {
  const used = n.bytes_used, free = n.bytes_free;
  const cap = used !== null && used !== undefined && free !== null && free !== undefined
    ? el("div", {}, bar(used / Math.max(1, used + free), `${n.id} capacity`),
      el("small", {}, `${bytes(used)} used, ${bytes(free)} free`))
    : el("small", {}, "unknown (node down)");
  const actions = el("div", { class: "row" });
  if (n.state !== "lost") {
    actions.append(el("button", { class: "small", "data-action": "weight", onclick: async () => {
      const w = prompt(`New weight for ${n.id} (now ${n.weight}):`, String(n.weight));
      if (w === null) return;
      const weight = Number(w);
      if (!Number.isInteger(weight) || weight < 0) { toast("A weight is a whole number ≥ 0."); return; }
      await act(errors, `Set the weight of ${n.id} to ${weight}? Data moves to match.`, "Set weight",
        () => api.changeNode(n.id, { weight }), `${n.id}: weight ${weight}`);
    } }, "Weight"));
  }
  if (n.state === "active") {
    actions.append(el("button", { class: "small", "data-action": "drain", onclick: () =>
      act(errors, `Drain ${n.id}? Its data moves to the other nodes; it keeps serving reads.`, "Drain",
        () => api.changeNode(n.id, { state: "draining" }), `${n.id} is draining`) }, "Drain"));
  }
  if (n.state === "draining" || n.state === "removed") {
    actions.append(el("button", { class: "small", "data-action": "activate", onclick: () =>
      act(errors, `Make ${n.id} active again?`, "Activate",
        () => api.changeNode(n.id, { state: "active" }), `${n.id} is active`) }, "Activate"));
  }
  if (n.state === "draining") {
    actions.append(el("button", { class: "small", "data-action": "remove", onclick: () =>
      act(errors, `Remove ${n.id} from placement? Do this once it has drained.`, "Remove",
        () => api.changeNode(n.id, { state: "removed" }), `${n.id} removed`) }, "Remove"));
  }
  if (n.state !== "lost") {
    actions.append(el("button", { class: "small danger", "data-action": "lost", onclick: () =>
      act(errors, `Declare ${n.id} lost for good? The others rebuild its copies; it can only come back under a new id.`,
        "Mark lost", () => api.changeNode(n.id, { state: "lost" }), `${n.id} marked lost`) }, "Mark lost"));
  }
  return el("tr", { "data-node": n.id },
    el("th", { scope: "row" }, n.id, el("br"), el("small", {}, n.addr)),
    el("td", {}, n.zone),
    el("td", {}, String(n.weight)),
    el("td", {}, el("span", { class: `state ${n.state}` }, n.state)),
    el("td", {}, el("span", { class: `health ${n.health}` }, n.health)),
    el("td", {}, cap),
    el("td", {}, n.chunks === null || n.chunks === undefined ? "–" : n.chunks.toLocaleString()),
    el("td", {}, actions));
}

function clusterActions(errors) {
  const id = el("input", { name: "id", placeholder: "node id", required: true });
  const addr = el("input", { name: "addr", placeholder: "host:port", required: true });
  const zone = el("input", { name: "zone", placeholder: "zone", required: true });
  const rate = el("input", { name: "rate", type: "number", min: "0", placeholder: "MiB/s (0: unlimited)" });
  return el("section", { class: "cards" },
    el("form", { class: "card", id: "add-node", onsubmit: (ev) => {
      ev.preventDefault();
      act(errors, `Add node ${id.value} at ${addr.value} in zone ${zone.value}?`, "Add node",
        () => api.addNode({ id: id.value.trim(), addr: addr.value.trim(), zone: zone.value.trim() }),
        `${id.value} added`);
    } }, el("h2", {}, "Add a node"), id, addr, zone, el("button", { type: "submit" }, "Add")),
    el("div", { class: "card" }, el("h2", {}, "Rebalance"),
      el("div", { class: "row" },
        el("button", { onclick: () => act(errors, "Pause moving data on every node?", "Pause",
          () => api.rebalance({ paused: true }), "rebalance paused") }, "Pause"),
        el("button", { onclick: () => act(errors, "Resume moving data?", "Resume",
          () => api.rebalance({ paused: false }), "rebalance resumed") }, "Resume"),
        el("button", { onclick: () => act(errors, "Check every copy now and bring missing ones back (repair)?",
          "Repair", () => api.repair(), "repair started") }, "Repair now")),
      el("form", { class: "row", onsubmit: (ev) => {
        ev.preventDefault();
        const mib = Number(rate.value || 0);
        act(errors, mib ? `Limit moving data to ${mib} MiB/s per node?` : "Remove the rate limit?", "Apply",
          () => api.rebalance({ bytes_per_sec: Math.round(mib * 1048576) }), "rate set");
      } }, rate, el("button", { type: "submit" }, "Throttle"))));
}
