// Every call the console makes goes through here: the same public APIs as any client,
// with the credentials the user signed in with (kept in sessionStorage only: never in a
// URL, never in localStorage, gone when the tab closes).

const KEY = "kura.apiKey";
const ADMIN = "kura.adminToken";

export const creds = {
  get apiKey() { return sessionStorage.getItem(KEY) || ""; },
  get adminToken() { return sessionStorage.getItem(ADMIN) || ""; },
  set(apiKey, adminToken) {
    if (apiKey) sessionStorage.setItem(KEY, apiKey); else sessionStorage.removeItem(KEY);
    if (adminToken) sessionStorage.setItem(ADMIN, adminToken); else sessionStorage.removeItem(ADMIN);
  },
  clear() { sessionStorage.removeItem(KEY); sessionStorage.removeItem(ADMIN); },
};

/// An API answer that was not 2xx, with kura's error code and message.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

/// Percent-encodes a key for a URL path, keeping its slashes.
export function keyPath(key) {
  return key.split("/").map(encodeURIComponent).join("/");
}

async function call(method, path, { body, admin = false, headers = {}, raw = false } = {}) {
  const token = admin ? creds.adminToken : creds.apiKey;
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  if (body !== undefined && !(body instanceof Blob)) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers: h, body, cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "unreachable", "The gateway did not answer (network error).");
  }
  if (!resp.ok) {
    let code = "http_" + resp.status;
    let message = `HTTP ${resp.status}`;
    try {
      const j = await resp.json();
      code = j.error || code;
      message = j.message || message;
    } catch (_) { /* not JSON */ }
    throw new ApiError(resp.status, code, message);
  }
  if (raw) return resp;
  if (resp.status === 204 || method === "HEAD") return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export const api = {
  // Content (API key).
  buckets: () => call("GET", "/v1/buckets"),
  list: (bucket, { prefix = "", after, delimiter = "/", limit = 100 } = {}) => {
    const q = new URLSearchParams({ prefix, limit: String(limit) });
    if (delimiter) q.set("delimiter", delimiter);
    if (after) q.set("after", after);
    return call("GET", `/v1/o/${encodeURIComponent(bucket)}?${q}`);
  },
  head: (bucket, key) => call("HEAD", `/v1/o/${encodeURIComponent(bucket)}/${keyPath(key)}`, { raw: true }),
  getBlob: async (bucket, key) =>
    (await call("GET", `/v1/o/${encodeURIComponent(bucket)}/${keyPath(key)}`, { raw: true })).blob(),
  remove: (bucket, key) => call("DELETE", `/v1/o/${encodeURIComponent(bucket)}/${keyPath(key)}`),
  locate: (bucket, key) => call("GET", `/v1/locate/${encodeURIComponent(bucket)}/${keyPath(key)}`),
  sign: (object, expiresIn) => call("POST", "/v1/sign", { body: { object, expires_in: expiresIn } }),
  jobs: (state, before) => {
    const q = new URLSearchParams({ limit: "100" });
    if (state) q.set("state", state);
    if (before) q.set("before", before);
    return call("GET", `/v1/jobs?${q}`);
  },
  job: (id) => call("GET", `/v1/jobs/${encodeURIComponent(id)}?tasks=true`),
  submit: (source, profile) => call("POST", "/v1/jobs", { body: { source, profile } }),
  submitBatch: (prefix, profile) => call("POST", "/v1/jobs/batch", { body: { prefix, profile } }),
  cancel: (id) => call("DELETE", `/v1/jobs/${encodeURIComponent(id)}`),
  batch: (id) => call("GET", `/v1/batches/${encodeURIComponent(id)}`),
  // Operators (admin token).
  cluster: () => call("GET", "/v1/admin/cluster", { admin: true }),
  changeNode: (id, change) =>
    call("PATCH", `/v1/admin/nodes/${encodeURIComponent(id)}`, { admin: true, body: change }),
  addNode: (node) => call("POST", "/v1/admin/nodes", { admin: true, body: node }),
  rebalance: (settings) => call("PUT", "/v1/admin/rebalance", { admin: true, body: settings }),
  repair: () => call("POST", "/v1/admin/repair", { admin: true }),
  traffic: () => call("GET", "/v1/admin/traffic", { admin: true }),
};
