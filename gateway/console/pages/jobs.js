// Jobs: a live list with a state filter and progress bars; a job's stages, tasks,
// attempts, workers, errors and timings; cancel, resubmit; submit a job or a batch.

import { api } from "../api.js";
import { el, show, when, duration, bar, errorBox, toast, confirmAction, every } from "../ui.js";
import { objectHref } from "./buckets.js";

/// How often the job pages refresh.
const REFRESH_MS = 2000;
const STATES = ["", "queued", "running", "playable", "succeeded", "failed", "cancelled"];

function sourceLink(source) {
  const i = source.indexOf("/");
  return i > 0 ? el("a", { href: objectHref(source.slice(0, i), source.slice(i + 1)) }, source) : source;
}

export function jobsPage() {
  const filter = el("select", { id: "state-filter", "aria-label": "state" },
    STATES.map((s) => el("option", { value: s }, s || "all states")));
  const list = el("div", { id: "jobs" }, el("p", { class: "hint" }, "Loading…"));
  const errors = el("div", {});
  const source = el("input", { name: "source", placeholder: "bucket/key or bucket/prefix/", required: true });
  const profile = el("select", { name: "profile" }, ["default", "preview"].map((p) => el("option", { value: p }, p)));
  show(el("section", {}, el("h1", {}, "Jobs"),
    el("form", { class: "row card", id: "submit-job", onsubmit: async (ev) => {
      ev.preventDefault();
      errors.replaceChildren();
      const s = source.value.trim();
      try {
        if (s.endsWith("/")) {
          const b = await api.submitBatch(s, profile.value);
          location.hash = `#/batches/${encodeURIComponent(b.id)}`;
        } else {
          const j = await api.submit(s, profile.value);
          location.hash = `#/jobs/${encodeURIComponent(j.id)}`;
        }
      } catch (e) { errors.replaceChildren(errorBox(e)); }
    } }, source, profile, el("button", { type: "submit" }, "Submit"),
    el("small", {}, "A source ending in / submits a batch: one job per object under it.")),
    errors, el("div", { class: "row" }, filter), list));
  const tick = async () => {
    try {
      const jobs = await api.jobs(filter.value);
      list.replaceChildren(jobs.length ? jobsTable(jobs) : el("p", { class: "empty" }, "No jobs."));
    } catch (e) {
      list.replaceChildren(errorBox(e));
    }
  };
  filter.addEventListener("change", tick);
  every(REFRESH_MS, tick);
}

function jobsTable(jobs) {
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ["Job", "Source", "Profile", "State", "Progress", "Submitted"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, jobs.map((j) => el("tr", { "data-job": j.id, "data-state": j.state },
      el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.id)),
      el("td", {}, sourceLink(j.source),
        j.batch ? el("small", {}, " · ", el("a", { href: `#/batches/${encodeURIComponent(j.batch)}` }, "batch")) : ""),
      el("td", {}, j.profile),
      el("td", {}, el("span", { class: `state ${j.state}` }, j.state)),
      el("td", {}, bar(j.progress, `progress of ${j.id}`), el("small", {}, `${Math.round(j.progress * 100)}%`)),
      el("td", {}, when(j.created_ms)))))));
}

export function jobPage(id) {
  const body = el("div", { id: "job" }, el("p", { class: "hint" }, "Loading…"));
  const errors = el("div", {});
  show(el("section", {}, el("nav", { class: "crumbs" }, el("a", { href: "#/jobs" }, "Jobs")),
    el("h1", {}, `Job ${id}`), errors, body));
  every(REFRESH_MS, async () => {
    try {
      body.replaceChildren(...jobDetail(await api.job(id), errors));
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  });
}

function jobDetail(j, errors) {
  const finished = ["succeeded", "failed", "cancelled"].includes(j.state);
  const actions = el("div", { class: "row" },
    finished ? "" : el("button", { class: "danger", id: "cancel-job", onclick: async () => {
      if (!(await confirmAction(`Cancel job ${j.id}?`, "Cancel job"))) return;
      try { await api.cancel(j.id); toast("cancelled"); } catch (e) { errors.replaceChildren(errorBox(e)); }
    } }, "Cancel"),
    el("button", { id: "resubmit-job", onclick: async () => {
      try {
        const n = await api.submit(j.source, j.profile);
        location.hash = `#/jobs/${encodeURIComponent(n.id)}`;
      } catch (e) { errors.replaceChildren(errorBox(e)); }
    } }, "Resubmit"));
  const facts = [
    ["Source", sourceLink(j.source)], ["Profile", j.profile], ["State", el("span", { class: `state ${j.state}` }, j.state)],
    ["Progress", el("span", {}, bar(j.progress, "job progress"), `${Math.round(j.progress * 100)}%`)],
    ["Stage", `${j.current_stage + 1} of ${j.stages}`], ["Attempts", String(j.attempts)],
    ["Submitted", when(j.created_ms)], ["Last change", when(j.updated_ms)],
    ["Time so far", duration((j.updated_ms - j.created_ms) / 1000)],
  ];
  if (j.batch) facts.push(["Batch", j.batch]);
  if (j.error) facts.push(["Error", el("span", { class: "error" }, `${j.error.class}: ${j.error.message}`)]);
  const tasks = (j.task_details || []).map((t) => el("tr", { "data-task": t.id },
    el("td", {}, String(t.stage + 1)), el("td", {}, t.spec.kind),
    el("td", {}, el("span", { class: `state ${t.state}` }, t.state)),
    el("td", {}, bar(t.progress, `task ${t.id}`)), el("td", {}, String(t.attempts)),
    el("td", {}, t.lease ? t.lease.worker : "–"),
    el("td", {}, t.last_error ? `${t.last_error.class}: ${t.last_error.message}` : "")));
  return [actions,
    el("dl", { class: "card meta" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("div", { class: "scroll" }, el("table", { id: "tasks" }, el("caption", {}, "Tasks"),
      el("thead", {}, el("tr", {}, ["Stage", "Kind", "State", "Progress", "Attempts", "Worker", "Last error"].map((h) => el("th", {}, h)))),
      el("tbody", {}, tasks)))];
}

/// A batch: its jobs' states counted and their mean progress, live.
export function batchPage(id) {
  const body = el("div", { id: "batch" }, el("p", { class: "hint" }, "Loading…"));
  show(el("section", {}, el("nav", { class: "crumbs" }, el("a", { href: "#/jobs" }, "Jobs")),
    el("h1", {}, `Batch ${id}`), body));
  every(REFRESH_MS, async () => {
    try {
      const b = await api.batch(id);
      const counts = ["queued", "running", "succeeded", "failed", "cancelled"]
        .map((k) => el("span", { class: `state ${k}` }, `${b[k]} ${k}`));
      body.replaceChildren(
        el("dl", { class: "card meta" },
          el("dt", {}, "Prefix"), el("dd", {}, b.prefix),
          el("dt", {}, "Profile"), el("dd", {}, b.profile),
          el("dt", {}, "Submitted"), el("dd", {}, when(b.created_ms)),
          el("dt", {}, "Jobs"), el("dd", {}, el("div", { class: "row" }, `${b.total}:`, counts)),
          el("dt", {}, "Progress"), el("dd", {}, bar(b.progress, "batch progress"), `${Math.round(b.progress * 100)}%`)),
        el("ul", { class: "buckets" }, b.jobs.map((j) => el("li", {}, el("a", { href: `#/jobs/${encodeURIComponent(j)}` }, j)))));
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  });
}
