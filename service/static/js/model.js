// Turns the API's job/candidate/event JSON into what the views draw: one place that knows
// the field names, so the views stay readable.

import { fmtCount } from "./util.js";

// The job statuses as the server declares them (workers/status.py, served with the dashboard's
// choices): every status in order, and the final ones. `setStatuses` fills them before a view draws.
export const STATUSES = [];
export const FINAL = new Set();

export function setStatuses(choices) {
  STATUSES.splice(0, STATUSES.length, ...choices.statuses);
  FINAL.clear();
  for (const s of choices.final) FINAL.add(s);
}

// Which candidate field holds the resource a target of this kind limits.
const RESOURCE_FIELD = { flops: "flops", params: "params", memory: "memory_bytes", latency: "latency_ms" };
const RESOURCE_LABEL = { flops: "FLOPs (MACs)", params: "parameters", memory: "peak memory (bytes)", latency: "latency (ms)" };

export function resourceOf(candidate, kind) {
  const v = candidate[RESOURCE_FIELD[kind] || "flops"];
  return v === null || v === undefined ? null : Number(v);
}

// A latency is a latency in one runtime (the job's `runtime`): the label names it.
export function resourceLabel(kind, runtime) {
  const label = RESOURCE_LABEL[kind] || kind;
  return kind === "latency" && runtime ? `${label}, ${runtime}` : label;
}

// The API stores a job's spec validated, with its target as {"kind", "value", "absolute"}.
export function describeTarget(t) {
  if (!t || !t.kind) return "—";
  if (!t.absolute) return `${t.kind} ≤ ${Math.round(Number(t.value) * 1000) / 10} %`;
  const unit = { latency: " ms", memory: " B" }[t.kind] || "";
  return `${t.kind} ≤ ${fmtCount(Number(t.value))}${unit}`;
}

// How a page writes each task's score name ("miou" as "mIoU"), as the server declares them
// (pruning/tasks, served with the dashboard's choices). `setScoreLabels` fills it before a view draws.
const SCORE_LABELS = new Map();

export function setScoreLabels(choices) {
  SCORE_LABELS.clear();
  for (const [name, label] of Object.entries(choices.score_labels || {})) SCORE_LABELS.set(name, label);
}

// What a job's score measures, as a page writes it: the summary's `score_name` (e.g. "mIoU" for
// segmentation's "miou"), else "accuracy", the score of a classifier.
export function scoreNameOf(summary) {
  const name = summary && summary.score_name;
  if (typeof name !== "string" || !name) return "accuracy";
  return SCORE_LABELS.get(name) || name;
}

// "accuracy" -> "Accuracy" for a table's row label; a name with capitals ("mIoU") stays as it is.
export function capitalised(name) {
  return name === name.toLowerCase() ? name.charAt(0).toUpperCase() + name.slice(1) : name;
}

// A job from `GET /v1/jobs[/{id}]` (service/api/jobs.py `JobOut`) with display names.
export function normJob(raw) {
  const spec = raw.spec || {};
  const model = spec.model || {};
  const best = raw.best || null;
  return {
    raw,
    id: raw.id,
    name: `Job ${raw.id}`,
    status: raw.status,
    phase: raw.phase || "",
    progress: Math.max(0, Math.min(1, Number(raw.progress) || 0)),
    candidates: raw.candidates_evaluated ?? 0,
    best,
    bestScore: best && best.score !== undefined ? best.score : null,
    model: model.upload !== null && model.upload !== undefined ? `upload #${model.upload}${model.zoo ? ` (${model.zoo})` : ""}` : model.zoo || "—",
    data: spec.data && spec.data.upload !== null && spec.data.upload !== undefined ? `upload #${spec.data.upload}` : (spec.data && spec.data.name) || "—",
    strategy: (spec.strategy && spec.strategy.name) || "—",
    target: spec.target && spec.target.kind ? spec.target : null,
    runtime: spec.runtime || "eager", // the deployment runtime its latency figures are measured in
    createdAt: raw.created_at,
    startedAt: raw.started_at,
    finishedAt: raw.finished_at,
    error: raw.error || null,
    traceback: raw.traceback || null,
    summary: raw.summary || null,
    scoreName: scoreNameOf(raw.summary),
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
// summary's `budget`, or the `budget` the search phase's event reports (search/pipeline.py).
export function budgetOf(job, events) {
  const t = job.target;
  if (!t) return null;
  if (t.absolute) return Number(t.value);
  if (job.summary && job.summary.budget !== undefined && job.summary.budget !== null) return Number(job.summary.budget);
  for (let i = events.length - 1; i >= 0; i--) {
    const d = events[i].data || {};
    if (d.budget !== undefined && d.budget !== null) return Number(d.budget);
  }
  return null;
}
