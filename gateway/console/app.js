// The console's shell: sign-in, navigation (hash routes, so no URL ever carries a
// credential and the gateway serves one page), and the page modules.

import { api, creds } from "./api.js";
import { el, show, errorText } from "./ui.js";
import { clusterPage } from "./pages/cluster.js";
import { bucketsPage, objectsPage } from "./pages/buckets.js";
import { objectPage } from "./pages/object.js";
import { jobsPage, jobPage, batchPage } from "./pages/jobs.js";

/// Routes: #/cluster, #/buckets, #/b/{bucket}/{prefix...}, #/o/{bucket}/{key}, #/jobs,
/// #/jobs/{id}, #/batches/{id}, #/signin.
const routes = [
  [/^#\/cluster$/, () => clusterPage(), "cluster", "admin"],
  [/^#\/buckets$/, () => bucketsPage(), "buckets", "key"],
  [/^#\/b\/([^/]+)\/?(.*)$/, (m) => objectsPage(dec(m[1]), dec(m[2])), "buckets", "key"],
  [/^#\/o\/([^/]+)\/(.+)$/, (m) => objectPage(dec(m[1]), dec(m[2])), "buckets", "key"],
  [/^#\/jobs$/, () => jobsPage(), "jobs", "key"],
  [/^#\/jobs\/(.+)$/, (m) => jobPage(dec(m[1])), "jobs", "key"],
  [/^#\/batches\/(.+)$/, (m) => batchPage(dec(m[1])), "jobs", "key"],
];

function dec(s) {
  try { return decodeURIComponent(s); } catch (_) { return s; }
}

function signedIn() {
  return Boolean(creds.apiKey || creds.adminToken);
}

function header() {
  const who = document.getElementById("who");
  const parts = [];
  if (creds.apiKey) parts.push("API key");
  if (creds.adminToken) parts.push("admin");
  who.textContent = parts.length ? `signed in: ${parts.join(" + ")}` : "";
  document.getElementById("signout").hidden = !signedIn();
  for (const a of document.querySelectorAll("#nav a")) {
    const needs = a.dataset.page === "cluster" ? creds.adminToken : creds.apiKey;
    a.classList.toggle("off", !needs);
  }
}

function needs(kind) {
  const what = kind === "admin" ? "the admin token" : "an API key";
  show(el("section", { class: "empty" },
    el("h1", {}, "Sign-in needed"),
    el("p", {}, `This page needs ${what}. `, el("a", { href: "#/signin" }, "Sign in"), ".")));
}

function signinPage(message) {
  const key = el("input", { id: "api-key", type: "password", autocomplete: "off", name: "api-key",
    placeholder: "API key" });
  const admin = el("input", { id: "admin-token", type: "password", autocomplete: "off",
    name: "admin-token", placeholder: "admin token (operators)" });
  const err = el("p", { id: "signin-error", class: "error", role: "alert", hidden: !message }, message || "");
  const form = el("form", { class: "signin", onsubmit: async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    const k = key.value.trim();
    const a = admin.value.trim();
    if (!k && !a) {
      err.textContent = "Enter an API key, an admin token, or both.";
      err.hidden = false;
      return;
    }
    creds.set(k, a);
    try {
      if (k) await api.buckets();
    } catch (e) {
      creds.clear();
      err.textContent = e.status === 401 ? "The API key was refused." : errorText(e);
      err.hidden = false;
      return;
    }
    try {
      if (a) await api.cluster();
    } catch (e) {
      creds.clear();
      err.textContent = e.status === 401 ? "The admin token was refused." : errorText(e);
      err.hidden = false;
      return;
    }
    location.hash = k ? "#/buckets" : "#/cluster";
  } },
  el("h1", {}, "Sign in"),
  el("p", { class: "hint" }, "Kept in this browser tab only; closing the tab signs you out."),
  el("label", { for: "api-key" }, "API key (content: buckets, objects, jobs)"), key,
  el("label", { for: "admin-token" }, "Admin token (operators: the cluster page)"), admin,
  err,
  el("button", { type: "submit", id: "signin-button" }, "Sign in"));
  show(form);
  key.focus();
}

async function route() {
  header();
  const hash = location.hash || "#/";
  if (hash === "#/signin" || !signedIn()) return signinPage();
  if (hash === "#/") {
    location.hash = creds.apiKey ? "#/buckets" : "#/cluster";
    return;
  }
  for (const [re, page, nav, kind] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("here", a.dataset.page === nav);
      if (a.dataset.page === nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if ((kind === "admin" && !creds.adminToken) || (kind === "key" && !creds.apiKey)) {
      return needs(kind);
    }
    document.getElementById("main").focus({ preventScroll: true });
    return page(m);
  }
  show(el("section", { class: "empty" }, el("h1", {}, "No such page"),
    el("p", {}, el("a", { href: "#/" }, "Back to the start"))));
}

document.getElementById("signout").addEventListener("click", () => {
  creds.clear();
  location.hash = "#/signin";
  route();
});
window.addEventListener("hashchange", route);
route();
