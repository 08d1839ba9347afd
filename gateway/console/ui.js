// Small DOM and formatting helpers shared by the pages.

/// Creates an element: el("a", { href: "#" }, "text", child, ...).
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/// Replaces the page's content.
export function show(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
}

/// Sizes in binary units: 1.5 GiB.
export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/// A time in the viewer's time zone.
export function when(ms) {
  if (!ms) return "–";
  return new Date(ms).toLocaleString();
}

/// Seconds as 1h 2m 3s.
export function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
}

/// A progress bar (0..1).
export function bar(fraction, label) {
  // The width is set through the CSSOM: the console's CSP allows no inline style.
  const m = el("div", { class: "meter", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
    "aria-label": label || "progress" }, el("span"));
  setBar(m, fraction);
  return m;
}

/// Moves a bar made by `bar` to `fraction`.
export function setBar(meter, fraction) {
  const p = Math.max(0, Math.min(1, fraction || 0));
  meter.setAttribute("aria-valuenow", String(Math.round(p * 100)));
  meter.firstChild.style.width = `${(p * 100).toFixed(1)}%`;
}

/// A message for a failed call, as the user should read it.
export function errorText(e) {
  if (e && e.status === 401) return "Not signed in, or the key was refused (401).";
  if (e && e.status === 403) return "This key may not do that (403).";
  if (e && e.code === "unreachable") return e.message;
  if (e && e.status === 501) return `Not configured on this gateway: ${e.message}`;
  if (e && e.status === 502) return `The service behind the gateway did not answer: ${e.message}`;
  return e && e.message ? e.message : String(e);
}

/// An error box.
export function errorBox(e) {
  return el("p", { class: "error", role: "alert" }, errorText(e));
}

/// A short notice at the bottom of the window.
export function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.classList.add("on");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("on"), 4000);
}

/// Asks before a destructive action; resolves true when confirmed.
export function confirmAction(question, action = "Confirm") {
  return new Promise((resolve) => {
    const dlg = el("dialog", { class: "confirm" },
      el("p", {}, question),
      el("div", { class: "row" },
        el("button", { class: "danger", value: "yes" }, action),
        el("button", { value: "no" }, "Cancel")));
    dlg.addEventListener("click", (ev) => {
      if (ev.target.tagName === "BUTTON") { dlg.close(ev.target.value); }
    });
    dlg.addEventListener("close", () => { dlg.remove(); resolve(dlg.returnValue === "yes"); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

/// Runs `tick` now and every `ms` until the page changes (returns a stop function).
export function every(ms, tick) {
  let stopped = false;
  let timer;
  const page = location.hash;
  const run = async () => {
    if (stopped || location.hash !== page) return;
    try { await tick(); } finally {
      if (!stopped && location.hash === page) timer = setTimeout(run, ms);
    }
  };
  run();
  return () => { stopped = true; clearTimeout(timer); };
}
