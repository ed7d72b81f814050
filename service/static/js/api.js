// The /v1 API as seen from the browser: Bearer token from sessionStorage, one-line errors,
// and a hook that sends the user back to token entry on 401.

const TOKEN_KEY = "secateurs.token";
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, message, fields) {
    super(message);
    this.status = status;
    this.fields = fields || []; // [{field: "target.flops", message: "..."}] for 422s
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

const fieldOf = (d) => ({
  field: (d.loc || []).filter((p) => !["body", "query", "path"].includes(p)).join("."),
  message: String(d.msg || d.message || "invalid").replace(/^Value error, /, ""),
});

// The API's 422 is {"detail": "field: why; ...", "errors": [{loc, msg}]}; FastAPI's default
// puts the list in `detail`; other errors are a string. All become one readable line plus
// per-field messages.
function describeError(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string" && Array.isArray(body.errors)) return new ApiError(status, detail, body.errors.map(fieldOf));
  if (Array.isArray(detail)) {
    const fields = detail.map(fieldOf);
    return new ApiError(status, fields.map((f) => (f.field ? `${f.field}: ${f.message}` : f.message)).join("; "), fields);
  }
  return new ApiError(status, detail ? String(detail) : `HTTP ${status}`);
}

// An answer's body as JSON; text that is not JSON (a proxy's error page) becomes its `detail`.
function parseBody(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text.slice(0, 300) };
  }
}

// Polled GETs are conditional: the ETag of the last answer per URL goes out as If-None-Match,
// and a 304 (nothing changed, no body sent) reuses that answer. Cursors (`?after=`) make new
// URLs, so only the latest few are kept.
const polled = new Map(); // path -> {etag, data}
const POLLED_MAX = 200;

export async function request(method, path, body) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${getToken()}` };
  const init = { method, headers };
  const seen = method === "GET" ? polled.get(path) : undefined;
  if (method === "GET") init.cache = "no-store"; // the page revalidates itself, below
  if (seen) headers["If-None-Match"] = seen.etag;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "the server did not answer (is it running?)");
  }
  if (resp.status === 401) {
    onUnauthorized();
    throw new ApiError(401, "the token was not accepted");
  }
  if (resp.status === 304 && seen) return seen.data;
  const data = parseBody(await resp.text());
  if (!resp.ok) throw describeError(resp.status, data);
  const etag = resp.headers.get("ETag");
  if (method === "GET" && etag) {
    polled.delete(path);
    if (polled.size >= POLLED_MAX) polled.delete(polled.keys().next().value);
    polled.set(path, { etag, data });
  }
  return data;
}

export const get = (path) => request("GET", path);

// The dashboard's read-out of what /v1 has no endpoint for (service/dashboard.py `choices`: the
// form's names, the job statuses and the final ones), fetched once for every view; a failed
// fetch is tried again on the next call.
let choices = null;
export function loadChoices() {
  if (!choices) {
    choices = fetch("/dashboard/choices.json", { headers: { Accept: "application/json" } })
      .then((resp) => {
        if (!resp.ok) throw new ApiError(resp.status, `HTTP ${resp.status} from /dashboard/choices.json`);
        return resp.json();
      })
      .catch((err) => {
        choices = null;
        throw err instanceof ApiError ? err : new ApiError(0, "the server did not answer (is it running?)");
      });
  }
  return choices;
}
export const post = (path, body) => request("POST", path, body);

// POSTs a multipart form (a file upload) with XMLHttpRequest, whose upload events report the
// bytes sent so far (fetch cannot): `onProgress(fraction)` as the body goes out. Resolves with
// the answer's JSON; rejects with the API's one-line error (413, 422) like `request`. Aborting
// `signal` stops the upload.
export function upload(path, form, { onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("Authorization", `Bearer ${getToken()}`);
    if (onProgress) xhr.upload.addEventListener("progress", (evt) => evt.lengthComputable && onProgress(evt.loaded / evt.total));
    xhr.addEventListener("load", () => {
      if (xhr.status === 401) {
        onUnauthorized();
        reject(new ApiError(401, "the token was not accepted"));
        return;
      }
      const data = parseBody(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(describeError(xhr.status, data));
    });
    // A server that refuses a body early (over its size limit) may close the connection before
    // the browser has read its answer; the caller names the limit when it knows it.
    xhr.addEventListener("error", () => reject(new ApiError(0, "the connection closed during the upload")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "the upload was stopped")));
    if (signal) signal.addEventListener("abort", () => xhr.abort());
    xhr.send(form);
  });
}

// A list endpoint answers a bare list (candidates, events, artifacts) or a page {items, total}.
export function itemsOf(data) {
  if (Array.isArray(data)) return data;
  return (data && data.items) || [];
}

// A picture behind the token, as an object URL an <img> can show (kept per URL: a finished
// job's artifacts never change, and a page redrawn on each poll must not fetch them again).
const objectUrls = new Map();
export function objectUrl(url) {
  if (!objectUrls.has(url)) {
    const made = fetch(url, { headers: { Authorization: `Bearer ${getToken()}` } }).then(async (resp) => {
      if (!resp.ok) throw new ApiError(resp.status, `cannot load ${url}: HTTP ${resp.status}`);
      return URL.createObjectURL(await resp.blob());
    });
    made.catch(() => objectUrls.delete(url));
    objectUrls.set(url, made);
  }
  return objectUrls.get(url);
}

// Downloads need the token too, so a plain link will not do: fetch, then save the blob.
export async function download(url, filename) {
  const resp = await fetch(url, { headers: { Authorization: `Bearer ${getToken()}` } });
  if (resp.status === 401) {
    onUnauthorized();
    throw new ApiError(401, "the token was not accepted");
  }
  if (!resp.ok) throw new ApiError(resp.status, `download failed: HTTP ${resp.status}`);
  const blob = await resp.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}
