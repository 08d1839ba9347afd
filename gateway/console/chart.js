// Line charts drawn as SVG elements (no library, no inline style: colours come from
// style.css classes), for the cluster page's traffic over the last hour.

import { el } from "./ui.js";

const NS = "http://www.w3.org/2000/svg";
const W = 320;
const H = 120;
const PAD = { left: 44, right: 6, top: 8, bottom: 18 };

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) e.append(c);
  return e;
}

/// A chart of `series` ([{name, cls, values: [number|null]}]) over the times `t_ms`,
/// values shown with `fmt`. Returns a figure with a caption and a legend.
export function lineChart(title, t_ms, series, fmt) {
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined && isFinite(v));
  const max = Math.max(1e-9, ...all);
  const n = t_ms.length;
  const x = (i) => PAD.left + (n <= 1 ? 0 : (i / (n - 1)) * (W - PAD.left - PAD.right));
  const y = (v) => PAD.top + (1 - v / max) * (H - PAD.top - PAD.bottom);
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, class: "chart" });
  plot.append(
    svg("line", { x1: PAD.left, y1: y(0), x2: W - PAD.right, y2: y(0), class: "axis" }),
    svg("text", { x: PAD.left - 4, y: y(max) + 4, class: "tick", "text-anchor": "end" }, document.createTextNode(fmt(max))),
    svg("text", { x: PAD.left - 4, y: y(0), class: "tick", "text-anchor": "end" }, document.createTextNode(fmt(0))));
  if (n) {
    const span = Math.round((t_ms[n - 1] - t_ms[0]) / 60000);
    plot.append(svg("text", { x: W - PAD.right, y: H - 4, class: "tick", "text-anchor": "end" },
      document.createTextNode(`last ${span} min`)));
  }
  for (const s of series) {
    let d = "";
    s.values.forEach((v, i) => {
      if (v === null || v === undefined || !isFinite(v)) return;
      d += `${d ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    });
    if (d) plot.append(svg("path", { d, class: `line ${s.cls}` }));
  }
  const last = (s) => {
    const v = [...s.values].reverse().find((z) => z !== null && z !== undefined);
    return v === undefined ? "–" : fmt(v);
  };
  return el("figure", { class: "card chart-card" }, el("figcaption", {}, title), plot,
    el("div", { class: "legend" }, series.map((s) => el("span", { class: `key ${s.cls}` }, `${s.name}: ${last(s)}`))));
}
