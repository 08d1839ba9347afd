// Buckets and objects: bucket list, folder navigation by "/", search by prefix, pages
// of 100, delete (confirmed), signed URLs, and uploads by drag and drop or file picker
// through the resumable (tus) path: per-file progress, pause/resume, automatic resume
// after a network break, and an optional transcode when the upload completes.

import { api, creds } from "../api.js";
import { el, show, bytes, when, bar, setBar, errorBox, toast, confirmAction } from "../ui.js";

/// Objects per page.
const PAGE = 100;
/// Bytes per PATCH: a break costs at most one piece, and the gateway keeps what arrived.
const PIECE_BYTES = 16 * 1024 * 1024;
/// Waits between retries after a network break (tus-js-client resumes from the offset).
const RETRY_DELAYS_MS = [0, 1000, 3000, 5000, 10000, 20000, 30000, 60000];
/// Validity of a signed URL copied from the console.
const SIGNED_URL_SECONDS = 3600;

/// A link to a folder (prefix) of a bucket.
export function folderHref(bucket, prefix) {
  return `#/b/${encodeURIComponent(bucket)}/${prefix.split("/").map(encodeURIComponent).join("/")}`;
}

/// A link to an object's page.
export function objectHref(bucket, key) {
  return `#/o/${encodeURIComponent(bucket)}/${key.split("/").map(encodeURIComponent).join("/")}`;
}

export async function bucketsPage() {
  const list = el("div", {}, el("p", { class: "hint" }, "Loading…"));
  const name = el("input", { name: "bucket", placeholder: "bucket name", "aria-label": "bucket to open" });
  show(el("section", {}, el("h1", {}, "Buckets"),
    el("form", { class: "row", onsubmit: (ev) => {
      ev.preventDefault();
      if (name.value.trim()) location.hash = folderHref(name.value.trim(), "");
    } }, name, el("button", { type: "submit" }, "Open")),
    el("p", { class: "hint" }, "A bucket comes to exist with its first upload: open a new name and upload into it."),
    list));
  try {
    const r = await api.buckets();
    const buckets = r.buckets || [];
    list.replaceChildren(buckets.length
      ? el("ul", { class: "buckets", id: "bucket-list" }, buckets.map((b) =>
        el("li", {}, el("a", { href: folderHref(b.name, "") }, b.name), " ",
          el("small", {}, `created ${when(b.created_ms)}`))))
      : el("p", { class: "empty", id: "bucket-list" }, "No buckets yet."));
  } catch (e) {
    list.replaceChildren(errorBox(e));
  }
}

function crumbs(bucket, prefix) {
  const parts = prefix.split("/").filter(Boolean);
  const out = [el("a", { href: "#/buckets" }, "Buckets"), " / ",
    el("a", { href: folderHref(bucket, "") }, bucket)];
  let acc = "";
  for (const p of parts) {
    acc += p + "/";
    out.push(" / ", el("a", { href: folderHref(bucket, acc) }, p));
  }
  return el("nav", { class: "crumbs", "aria-label": "Folder" }, out);
}

export function objectsPage(bucket, prefix) {
  const state = { afters: [undefined], page: 0 };
  const table = el("div", { id: "objects" }, el("p", { class: "hint" }, "Loading…"));
  const errors = el("div", {});
  const search = el("input", { name: "search", value: prefix, placeholder: "key prefix",
    "aria-label": "search by key prefix" });
  const pager = el("div", { class: "row pager" });
  const load = async () => {
    errors.replaceChildren();
    try {
      const r = await api.list(bucket, { prefix, after: state.afters[state.page], limit: PAGE });
      table.replaceChildren(listing(bucket, prefix, r, errors, load));
      pager.replaceChildren(
        el("button", { disabled: state.page === 0, onclick: () => { state.page--; load(); } }, "◀ Previous"),
        el("span", {}, `page ${state.page + 1}`),
        el("button", { disabled: !r.next_after, onclick: () => {
          state.afters[state.page + 1] = r.next_after;
          state.page++;
          load();
        } }, "Next ▶"));
    } catch (e) {
      table.replaceChildren(e.status === 404 ? el("p", { class: "empty" }, "Nothing here yet.") : errorBox(e));
    }
  };
  show(el("section", {},
    crumbs(bucket, prefix),
    el("h1", {}, prefix ? prefix : bucket),
    el("form", { class: "row", role: "search", onsubmit: (ev) => {
      ev.preventDefault();
      location.hash = folderHref(bucket, search.value);
    } }, search, el("button", { type: "submit" }, "Search")),
    uploader(bucket, prefix, load),
    errors, table, pager));
  load();
}

function listing(bucket, prefix, r, errors, reload) {
  const folders = (r.prefixes || []).map((p) => el("tr", { class: "folder" },
    el("td", {}, el("a", { href: folderHref(bucket, p) }, p.slice(prefix.length))),
    el("td", {}, ""), el("td", {}, "folder"), el("td", {}, ""), el("td", {}, "")));
  const objects = (r.objects || []).map((o) => el("tr", { "data-key": o.key },
    el("td", {}, el("a", { href: objectHref(bucket, o.key) }, o.key.slice(prefix.length))),
    el("td", { class: "num" }, bytes(o.size)),
    el("td", {}, o.content_type || "–"),
    el("td", {}, when(o.last_modified_ms)),
    el("td", {}, el("div", { class: "row" },
      el("button", { class: "small", "data-action": "sign", onclick: () => copySigned(bucket, o.key, errors) }, "Copy URL"),
      el("button", { class: "small danger", "data-action": "delete", onclick: async () => {
        if (!(await confirmAction(`Delete ${bucket}/${o.key}? This cannot be undone.`, "Delete"))) return;
        try {
          await api.remove(bucket, o.key);
          toast(`Deleted ${o.key}`);
          reload();
        } catch (e) {
          errors.replaceChildren(errorBox(e));
        }
      } }, "Delete")))));
  if (!folders.length && !objects.length) return el("p", { class: "empty" }, "Nothing here yet: upload a file.");
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ["Name", "Size", "Type", "Modified", ""].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, folders, objects)));
}

async function copySigned(bucket, key, errors) {
  try {
    const r = await api.sign(`${bucket}/${key}`, SIGNED_URL_SECONDS);
    const url = location.origin + r.path;
    try {
      await navigator.clipboard.writeText(url);
      toast("Signed URL copied (valid 1 hour).");
    } catch (_) {
      prompt("Signed URL (valid 1 hour):", url);
    }
  } catch (e) {
    errors.replaceChildren(errorBox(e));
  }
}

function uploader(bucket, prefix, reload) {
  const files = el("input", { type: "file", multiple: true, id: "file-input", "aria-label": "files to upload" });
  const transcode = el("select", { id: "transcode", "aria-label": "transcode on upload" },
    el("option", { value: "" }, "no transcode"),
    el("option", { value: "default" }, "transcode: default ladder"),
    el("option", { value: "preview" }, "transcode: preview (two rungs)"));
  const list = el("ul", { class: "uploads", id: "uploads" });
  const start = (fileList) => {
    for (const f of fileList) list.append(uploadRow(bucket, prefix + f.name, f, transcode.value, reload));
  };
  files.addEventListener("change", () => { start(files.files); files.value = ""; });
  const zone = el("div", { class: "drop", id: "drop-zone",
    ondragover: (ev) => { ev.preventDefault(); zone.classList.add("over"); },
    ondragleave: () => zone.classList.remove("over"),
    ondrop: (ev) => { ev.preventDefault(); zone.classList.remove("over"); start(ev.dataTransfer.files); } },
  el("p", {}, `Drop files here to upload them into ${bucket}/${prefix}, or `,
    el("label", { for: "file-input", class: "link" }, "choose files"), "."),
  files, transcode);
  return el("section", { class: "card" }, zone, list);
}

function uploadRow(bucket, key, file, profile, reload) {
  const meter = bar(0, `upload of ${key}`);
  const text = el("small", {}, "starting…");
  const pause = el("button", { class: "small", "data-action": "pause" }, "Pause");
  const row = el("li", { "data-upload": key }, el("b", {}, key), " ", el("small", {}, bytes(file.size)), meter, text, pause);
  const metadata = { bucket, key, filename: file.name, filetype: file.type || "application/octet-stream" };
  if (profile) metadata.transcode = profile;
  const upload = new window.tus.Upload(file, {
    endpoint: "/v1/uploads",
    chunkSize: PIECE_BYTES,
    retryDelays: RETRY_DELAYS_MS,
    metadata,
    headers: { Authorization: `Bearer ${creds.apiKey}` },
    removeFingerprintOnSuccess: true,
    // Resume only an upload of this file to this same target (the default fingerprint
    // ignores the target, so the same file sent to two folders would share an upload).
    fingerprint: async (f) => ["kura", bucket, key, f.name, f.size, f.lastModified].join("\u0000"),
    onProgress: (sent, total) => {
      setBar(meter, total ? sent / total : 1);
      text.textContent = `${bytes(sent)} of ${bytes(total)}`;
    },
    onShouldRetry: (err, attempt) => {
      text.textContent = `connection lost, retrying (${attempt + 1})…`;
      const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
      return status === 0 || status >= 500 || status === 409;
    },
    onError: (err) => {
      row.classList.add("failed");
      const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
      text.textContent = status === 401 ? "refused: the API key was not accepted" : `failed: ${err.message}`;
      pause.hidden = true;
    },
    onSuccess: () => {
      row.classList.add("done");
      setBar(meter, 1);
      text.textContent = profile ? "uploaded; transcode job submitted" : "uploaded";
      pause.hidden = true;
      reload();
    },
  });
  let paused = false;
  pause.addEventListener("click", () => {
    paused = !paused;
    if (paused) { upload.abort(); text.textContent += " (paused)"; pause.textContent = "Resume"; }
    else { upload.start(); pause.textContent = "Pause"; }
  });
  upload.findPreviousUploads().then((previous) => {
    if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
    upload.start();
  });
  return row;
}
