// Small helpers shared by the views: DOM building and two widgets, number/time formatting,
// and a poller that sleeps while the tab is hidden.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A job status as a coloured pill.
export function statusBadge(status) {
  return el("span", { class: `badge status-${status}` }, status);
}

// An accessible progress bar for a fraction in [0, 1].
export function progressBar(fraction, label) {
  const pct = Math.round(fraction * 100);
  return el(
    "div",
    { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(pct), "aria-label": label || "progress" },
    el("div", { class: "progress-fill", style: `width:${pct}%` }),
  );
}

export function fmtCount(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(2)} G`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (abs >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return String(Math.round(n * 100) / 100);
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(2)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

export function fmtScore(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  return x <= 1 && x >= 0 ? `${(x * 100).toFixed(2)} %` : x.toFixed(4);
}

export function fmtMs(x) {
  return x === null || x === undefined ? "—" : `${x.toFixed(2)} ms`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function parseTime(value) {
  if (!value) return null;
  if (typeof value === "number") return value > 1e12 ? value : value * 1000;
  // Naive ISO timestamps from the API are UTC.
  const iso = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value}Z`;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

// A timestamp as local "YYYY-MM-DD HH:MM" (sorts and reads the same in every locale).
export function fmtDate(value) {
  const t = parseTime(value);
  if (t === null) return "—";
  const d = new Date(t);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}`;
}

export function ago(value) {
  const t = parseTime(value);
  return t === null ? "—" : `${fmtDuration((Date.now() - t) / 1000)} ago`;
}

// Calls `tick` every `intervalMs` after the previous call finished; while the document is
// hidden it waits for it to become visible again instead of polling.
export class Poller {
  constructor(tick, intervalMs) {
    this.tick = tick;
    this.intervalMs = intervalMs;
    this.timer = null;
    this.stopped = false;
    this.onVisible = () => {
      if (!document.hidden && !this.timer && !this.running && !this.stopped) this.run();
    };
    document.addEventListener("visibilitychange", this.onVisible);
  }

  async run() {
    if (this.stopped) return;
    this.timer = null;
    if (document.hidden) return; // resumed by onVisible
    this.running = true;
    let again = true;
    try {
      again = (await this.tick()) !== false;
    } catch (err) {
      console.warn("poll failed:", err);
    } finally {
      this.running = false;
    }
    if (again && !this.stopped) this.timer = setTimeout(() => this.run(), this.intervalMs);
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    document.removeEventListener("visibilitychange", this.onVisible);
  }
}

// "1 candidate", "3 candidates": a count with its noun.
export const plural = (n, word, many = `${word}s`) => `${n} ${n === 1 ? word : many}`;
