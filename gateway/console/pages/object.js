// One object: its metadata and ETag; for a video with a transcode, the player (hls.js,
// built in; requests carry the API key in a header, never in the URL) with a rendition
// picker and the level hls.js chose, the poster and thumbnail strip, each rendition's
// size, bitrate and measured quality, and the jobs that produced them.

import { api, creds, keyPath } from "../api.js";
import { el, show, bytes, when, duration, errorBox, toast, confirmAction } from "../ui.js";
import { folderHref } from "./buckets.js";

export async function objectPage(bucket, key) {
  const parent = key.includes("/") ? key.slice(0, key.lastIndexOf("/") + 1) : "";
  const meta = el("div", {}, el("p", { class: "hint" }, "Loading…"));
  const media = el("div", { id: "media" });
  const jobs = el("div", { id: "object-jobs" });
  show(el("section", {},
    el("nav", { class: "crumbs" }, el("a", { href: folderHref(bucket, parent) }, `${bucket}/${parent}`)),
    el("h1", {}, key.slice(parent.length)),
    meta, media, jobs));
  let head;
  try {
    head = await api.head(bucket, key);
  } catch (e) {
    meta.replaceChildren(e.status === 404 ? el("p", { class: "empty" }, "No such object (deleted?).") : errorBox(e));
    return;
  }
  meta.replaceChildren(metadata(bucket, key, head), chunksView(bucket, key));
  const related = await jobsOf(`${bucket}/${key}`).catch(() => []);
  jobs.replaceChildren(jobTable(related));
  const done = related.find((j) => j.state === "succeeded" && j.outputs && j.outputs.master);
  const type = head.headers.get("content-type") || "";
  if (done) media.replaceChildren(...await player(done));
  else if (type.startsWith("video/")) {
    media.replaceChildren(el("p", { class: "hint" }, related.length
      ? "The transcode has not finished yet: see its job below."
      : "Not transcoded yet. ", el("button", { id: "transcode-now", onclick: async () => {
      try {
        const j = await api.submit(`${bucket}/${key}`, "default");
        location.hash = `#/jobs/${encodeURIComponent(j.id)}`;
      } catch (e) { media.append(errorBox(e)); }
    } }, "Transcode now")));
  }
}

function metadata(bucket, key, head) {
  const h = head.headers;
  const rows = [
    ["Size", bytes(Number(h.get("content-length")))],
    ["Type", h.get("content-type") || "–"],
    ["ETag", (h.get("etag") || "").replaceAll('"', "")],
    ["Modified", when(Date.parse(h.get("last-modified")))],
  ];
  for (const [k, v] of h.entries()) {
    if (k.startsWith("x-kura-meta-")) rows.push([k.slice("x-kura-meta-".length), v]);
  }
  return el("div", { class: "cards" },
    el("dl", { class: "card meta", id: "object-meta" }, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("div", { class: "card" }, el("div", { class: "row" },
      el("button", { onclick: async () => {
        const blob = await api.getBlob(bucket, key);
        const a = el("a", { href: URL.createObjectURL(blob), download: key.split("/").pop() });
        document.body.append(a);
        a.click();
        a.remove();
      } }, "Download"),
      el("button", { class: "danger", id: "delete-object", onclick: async () => {
        if (!(await confirmAction(`Delete ${bucket}/${key}? This cannot be undone.`, "Delete"))) return;
        try {
          await api.remove(bucket, key);
          toast(`Deleted ${key}`);
          location.hash = folderHref(bucket, key.slice(0, key.lastIndexOf("/") + 1));
        } catch (e) { toast(e.message); }
      } }, "Delete"))));
}

/// The object's chunks and where their copies are (filled in when the answer comes).
function chunksView(bucket, key) {
  const box = el("details", { class: "card", id: "chunks" }, el("summary", {}, "Chunks and replicas"));
  api.locate(bucket, key).then((loc) => {
    const copy = (c) => el("span", { class: `copy ${c.held === true ? "held" : c.held === false ? "missing" : "unknown"}`,
      title: c.held === true ? "holds it" : c.held === false ? "does not hold it" : "did not answer" },
    `${c.node} (${c.zone}) ${c.held === true ? "✓" : c.held === false ? "✗" : "?"}`);
    box.append(
      el("p", {}, `${loc.chunk_count} chunk(s), ${loc.replicas} copies each`,
        loc.chunk_count > loc.chunks.length ? ` (first ${loc.chunks.length} shown)` : ""),
      el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ["#", "Chunk", "Size", "Copies"].map((h) => el("th", {}, h)))),
        el("tbody", {}, loc.chunks.map((c, i) => el("tr", {},
          el("td", { class: "num" }, String(i + 1)), el("td", {}, el("code", { title: c.id }, c.id.slice(0, 16) + "…")),
          el("td", { class: "num" }, bytes(c.size)), el("td", {}, el("div", { class: "row" }, c.copies.map(copy)))))))));
  }).catch((e) => box.append(errorBox(e)));
  return box;
}

async function jobsOf(source) {
  const all = await api.jobs();
  return all.filter((j) => j.source === source);
}

function jobTable(jobs) {
  if (!jobs.length) return el("p", { class: "hint" }, "No transcode jobs for this object.");
  return el("table", {}, el("caption", {}, "Jobs of this object"),
    el("tbody", {}, jobs.map((j) => el("tr", {},
      el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.id)),
      el("td", {}, j.profile), el("td", {}, el("span", { class: `state ${j.state}` }, j.state)),
      el("td", {}, when(j.created_ms))))));
}

/// The URL of a job output, named `bucket/key` as jobs name them.
function outputUrl(object) {
  return `/v1/o/${keyPath(object)}`;
}

/// Blob URL of an output image, `bucket/key` (an <img> cannot send the API key itself).
async function image(object) {
  if (!object) return null;
  const i = object.indexOf("/");
  try {
    return URL.createObjectURL(await api.getBlob(object.slice(0, i), object.slice(i + 1)));
  } catch (_) {
    return null;
  }
}

async function player(job) {
  const master = job.outputs.master;
  const video = el("video", { id: "player", controls: true, muted: true, playsinline: true });
  const picker = el("select", { id: "rendition", "aria-label": "rendition" }, el("option", { value: "-1" }, "auto"));
  const level = el("span", { id: "level" }, "");
  const poster = await image(job.outputs.poster);
  if (poster) video.poster = poster;
  if (window.Hls && window.Hls.isSupported()) {
    const hls = new window.Hls({
      enableWorker: false,
      xhrSetup: (xhr) => xhr.setRequestHeader("Authorization", `Bearer ${creds.apiKey}`),
    });
    hls.loadSource(outputUrl(master));
    hls.attachMedia(video);
    hls.on(window.Hls.Events.MANIFEST_PARSED, (_, data) => {
      data.levels.forEach((l, i) => picker.append(el("option", { value: String(i) }, `${l.height}p · ${bytes(l.bitrate / 8)}/s`)));
    });
    hls.on(window.Hls.Events.LEVEL_SWITCHED, (_, data) => {
      const l = hls.levels[data.level];
      level.textContent = `playing ${l.height}p${hls.autoLevelEnabled ? " (auto)" : ""}`;
      video.dataset.height = String(l.height);
    });
    hls.on(window.Hls.Events.ERROR, (_, data) => {
      if (data.fatal) level.textContent = `playback error: ${data.details}`;
    });
    picker.addEventListener("change", () => { hls.currentLevel = Number(picker.value); });
    window.addEventListener("hashchange", () => hls.destroy(), { once: true });
  } else {
    level.textContent = "This browser cannot play HLS with Media Source Extensions.";
  }
  const thumbs = await image(job.outputs.thumbnails);
  return [
    el("div", { class: "player" }, video, el("div", { class: "row" }, picker, level)),
    thumbs ? strip(thumbs, video) : "",
    renditions(job.outputs.renditions || []),
  ];
}

/// Width of one tile of the thumbnail strip, as the transcoder writes it
/// (`transcoder/src/media/images.rs`: tiles side by side, frames at even intervals).
const THUMB_WIDTH = 160;

/// The thumbnail strip: hovering a tile previews it larger with its time; a click seeks.
function strip(url, video) {
  const img = el("img", { src: url, id: "thumbs", alt: "thumbnail strip: hover to preview, click to seek" });
  const label = el("span");
  const preview = el("div", { class: "thumb-preview", id: "thumb-preview", hidden: true }, label);
  const tileAt = (ev) => {
    const n = Math.max(1, Math.round(img.naturalWidth / THUMB_WIDTH));
    const r = img.getBoundingClientRect();
    const i = Math.min(n - 1, Math.max(0, Math.floor(((ev.clientX - r.left) / r.width) * n)));
    return { i, n, t: ((i + 0.5) * video.duration) / n };
  };
  img.addEventListener("mousemove", (ev) => {
    const { i, n, t } = tileAt(ev);
    // Set through the CSSOM: the console's CSP allows no inline style.
    preview.style.backgroundImage = `url("${url}")`;
    preview.style.backgroundSize = `${n * 100}% 100%`;
    preview.style.backgroundPosition = `${n > 1 ? (i / (n - 1)) * 100 : 0}% 0`;
    preview.style.aspectRatio = `${THUMB_WIDTH} / ${img.naturalHeight || 90}`;
    label.textContent = isFinite(t) ? duration(t) : "";
    preview.dataset.tile = String(i);
    preview.hidden = false;
  });
  img.addEventListener("mouseleave", () => { preview.hidden = true; });
  img.addEventListener("click", (ev) => {
    const { t } = tileAt(ev);
    if (isFinite(t)) video.currentTime = t;
  });
  return el("figure", { class: "thumbs" }, img, preview, el("figcaption", {}, "Thumbnail strip: hover to preview, click to seek"));
}

function renditions(list) {
  const num = (v, d) => (v === undefined || v === null ? "–" : Number(v).toFixed(d));
  return el("table", { id: "renditions" }, el("caption", {}, "Renditions"),
    el("thead", {}, el("tr", {}, ["Name", "Size", "Bitrate", "Peak", "PSNR (dB)", "SSIM"].map((h) => el("th", {}, h)))),
    el("tbody", {}, list.map((r) => el("tr", {},
      el("td", {}, r.name), el("td", {}, `${r.width}×${r.height}`),
      el("td", { class: "num" }, `${bytes(r.bitrate / 8)}/s`), el("td", { class: "num" }, `${bytes(r.peak_bitrate / 8)}/s`),
      el("td", { class: "num" }, num(r.psnr, 2)), el("td", { class: "num" }, num(r.ssim, 4))))));
}
