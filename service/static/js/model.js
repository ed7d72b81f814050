// Turns the API's job/candidate/event JSON into what the views draw: one place that knows
// the field names, so the views stay readable.

export const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
export const FINAL = new Set(["succeeded", "failed", "cancelled"]);
export const TARGET_KINDS = ["flops", "params", "memory", "latency"];

// Which candidate field holds the resource a target of this kind limits.
const RESOURCE_FIELD = { flops: "flops", params: "params", memory: "memory_bytes", latency: "latency_ms" };
const RESOURCE_LABEL = { flops: "FLOPs (MACs)", params: "parameters", memory: "peak memory (bytes)", latency: "latency (ms)" };

export function resourceOf(candidate, kind) {
  const v = candidate[RESOURCE_FIELD[kind] || "flops"];
  return v === null || v === undefined ? null : Number(v);
}

export function resourceLabel(kind) {
  return RESOURCE_LABEL[kind] || kind;
}

// A target in any of the shapes the API accepts: {"flops": 0.5}, {"kind": "flops", "value": 0.5,
// "absolute": false}, or the string "flops=0.5".
export function parseTarget(target) {
  if (!target) return null;
  if (typeof target === "string") {
    const [kind, value] = target.split("=");
    return { kind, value: Number(value), absolute: Number(value) > 1 };
  }
  if (target.kind) return { kind: target.kind, value: Number(target.value), absolute: Boolean(target.absolute) };
  for (const kind of TARGET_KINDS) {
    if (target[kind] !== undefined) return { kind, value: Number(target[kind]), absolute: Boolean(target.absolute) };
  }
  return null;
}

export function describeTarget(t) {
  if (!t) return "—";
  if (t.absolute) return `${t.kind} ≤ ${t.value}`;
  return `${t.kind} ≤ ${Math.round(t.value * 1000) / 10} %`;
}

function describeModel(model) {
  if (!model) return "—";
  if (typeof model === "string") return model;
  const name = model.zoo || model.name || model.arch || "";
  const id = model.upload ?? model.id ?? model.model_id;
  return id !== undefined && id !== null ? `${name || "upload"} #${id}` : name || "—";
}

function describeData(data) {
  if (!data) return "—";
  if (typeof data === "string") return data;
  return data.name || data.kind || data.path || "—";
}

function describeStrategy(strategy) {
  if (!strategy) return "—";
  return typeof strategy === "string" ? strategy : strategy.name || "—";
}

export function normJob(raw) {
  const spec = raw.spec || {};
  const target = parseTarget(raw.target || spec.target);
  const best = raw.best || null;
  return {
    raw,
    id: raw.id,
    name: raw.name || spec.name || `Job ${raw.id}`,
    status: raw.status,
    phase: raw.phase || "",
    progress: Math.max(0, Math.min(1, Number(raw.progress) || 0)),
    candidates: raw.candidates_evaluated ?? raw.n_candidates ?? 0,
    best,
    bestScore: best && best.score !== undefined ? best.score : raw.best_score ?? null,
    model: describeModel(raw.model || spec.model),
    data: describeData(raw.data || spec.data),
    strategy: describeStrategy(raw.strategy || spec.strategy),
    target,
    createdAt: raw.created_at,
    startedAt: raw.started_at,
    finishedAt: raw.finished_at,
    error: raw.error || null,
    traceback: raw.traceback || null,
    summary: raw.summary || null,
  };
}

// The cursor a list of candidates/events advances to: the largest `seq` (or `id`) seen.
export function cursorOf(item) {
  return item.seq ?? item.id ?? 0;
}

// The non-dominated candidates (no other one is both cheaper and better), cheapest first.
export function paretoFront(points) {
  const sorted = points.filter((p) => p.x !== null && p.y !== null).sort((a, b) => a.x - b.x || b.y - a.y);
  const front = [];
  let bestY = -Infinity;
  for (const p of sorted) {
    if (p.y > bestY) {
      front.push(p);
      bestY = p.y;
    }
  }
  return front;
}

// The absolute resource limit the target sets, when it can be known: an absolute target, the
// summary's `budget`, or the `budget` the search phase's event reports.
export function budgetOf(job, events) {
  const t = job.target;
  if (!t) return null;
  if (t.absolute) return t.value;
  if (job.summary && job.summary.budget !== undefined && job.summary.budget !== null) return Number(job.summary.budget);
  const field = RESOURCE_FIELD[t.kind] || t.kind;
  for (let i = events.length - 1; i >= 0; i--) {
    const d = events[i].data || {};
    if (d.budget !== undefined && d.budget !== null) return Number(d.budget);
    const base = d[`${t.kind}_before`] ?? d[`${field}_before`] ?? (d.baseline && (d.baseline[field] ?? d.baseline[t.kind]));
    if (base !== undefined && base !== null) return Number(base) * t.value;
  }
  const s = job.summary || {};
  const before = s[`${t.kind}_before`] ?? s[`${field}_before`];
  if (before !== undefined && before !== null) return Number(before) * t.value;
  return null;
}
