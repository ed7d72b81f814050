// The candidate panels of a job's page: the resource-vs-score scatter (target line, Pareto
// front, chosen policy), the Inspect panel with a candidate's per-layer rates, the chosen
// policy's channels per layer, AMC's reward per episode and sensitivity curves.

import { lineChart, policyChart, scatterChart, setLines } from "../charts.js";
import { budgetOf, describeTarget, paretoFront, resourceLabel, resourceOf, scoreNameOf } from "../model.js";
import { el, fmtCount, fmtMs, fmtScore } from "../util.js";

// Exposed for the browser tests and for anyone curious about render cost.
const stats = (window.__secateurs = window.__secateurs || {});

export function card(title, id, ...body) {
  return el("section", { class: "card", id, "aria-labelledby": `${id}-title` }, el("h2", { id: `${id}-title` }, title), ...body);
}

function chartBox(canvas, extraClass = "") {
  return el("div", { class: `chart ${extraClass}` }, canvas);
}

const idOf = (c) => c.proposal_id ?? c.seq ?? c.id;

// Kept share and, when the original width is known, kept/original channels of each layer.
// A policy maps layers to rates in [0, 1) (or kept counts ≥ 1); a missing layer keeps all.
function rateBars(policy, channels, keys) {
  const list = el("ol", { class: "rates" });
  const names = channels ? Object.keys(channels) : keys.length ? keys : Object.keys(policy || {});
  for (const key of names) {
    const value = Number((policy || {})[key] ?? 0);
    const orig = channels && channels[key];
    const isCount = Number.isInteger(value) && value >= 1 && orig;
    const rate = isCount ? 1 - value / orig : value;
    const kept = orig ? (isCount ? value : Math.max(1, Math.round(orig * (1 - rate)))) : null;
    list.append(
      el(
        "li",
        {},
        el("span", { class: "rate-key", title: key }, key),
        el("span", { class: "rate-bar", "aria-hidden": "true" }, el("span", { style: `width:${Math.round((1 - rate) * 100)}%` })),
        el("span", { class: "rate-val" }, kept !== null ? `${kept}/${orig}` : `${Math.round((1 - rate) * 100)}% kept`),
      ),
    );
  }
  if (!list.children.length) list.append(el("li", { class: "muted" }, "no per-layer rates (the whole network is kept)"));
  return list;
}

// Where a candidate's evaluation time went (search/evaluators.py `meta.timing`, seconds per step).
function fmtTiming(c) {
  const t = (c.meta || {}).timing;
  if (!t) return c.wall_seconds ? `${Number(c.wall_seconds).toFixed(2)} s` : "—";
  const parts = Object.entries(t).map(([step, s]) => `${step} ${fmtMs(Number(s) * 1000)}`);
  return `${Number(c.wall_seconds || 0).toFixed(2)} s: ${parts.join(" · ")}`;
}

// AMC's reward for an episode (search/strategies/amc/env.py `reward_value`): -error, or -error·log(resource).
function amcReward(c, kind, rewardKind) {
  const m = c.meta || {};
  if (m.reward !== undefined && m.reward !== null) return Number(m.reward);
  const error = 1 - Number(c.score);
  if (rewardKind === "resource") return -error * Math.log(Math.max(Number(resourceOf(c, kind)) || 0, 1 + 1e-9));
  return -error;
}

export class CandidatePanels {
  constructor() {
    this.job = null;
    this.events = [];
    this.candidates = [];
    this.layerKeys = []; // in the order candidates first name them
    this.inspected = null;
    this.inspectedWhy = "";
    this.scatterKey = "";
    this.cursorIndex = -1;
    this.reward = null;
    this.sens = null;

    this.scatterCanvas = el("canvas", { id: "scatter", tabindex: "0", role: "img", "aria-label": "Candidates: resource against score. Arrow keys, Home and End step through candidates." });
    this.inspectBox = el("div", { class: "inspect", id: "inspect", "aria-live": "polite" });
    this.scatterNote = el("p", { class: "muted small", id: "scatter-note" });
    this.policyCanvas = el("canvas", { id: "policy", role: "img", "aria-label": "Chosen policy: channels per layer, original and kept" });
    this.policyNote = el("p", { class: "muted small" });
    this.rewardCanvas = el("canvas", { id: "reward", role: "img", "aria-label": "AMC reward per episode" });
    this.sensCanvas = el("canvas", { id: "sensitivity", role: "img", "aria-label": "Sensitivity: score against pruning rate per layer" });

    this.scatterGrid = el("div", { class: "grid-main" }, card("Candidates", "candidates-card", chartBox(this.scatterCanvas, "tall"), this.scatterNote), card("Inspect", "inspect-card", this.inspectBox));
    this.policyCard = card("Chosen policy: channels per layer", "policy-card", chartBox(this.policyCanvas), this.policyNote);
    this.rewardCard = card("AMC reward per episode", "reward-card", chartBox(this.rewardCanvas));
    this.sensCard = card("Sensitivity: score against pruning rate, per layer", "sens-card", chartBox(this.sensCanvas, "tall"));
    this.rewardCard.hidden = this.sensCard.hidden = true;

    this.scatter = scatterChart(this.scatterCanvas, { xLabel: resourceLabel("flops"), yLabel: "accuracy", describe: (p) => this.describe(p), onInspect: (p) => this.showInspect(p.c, "hovered") });
    this.policy = policyChart(this.policyCanvas);
    this.scatterCanvas.addEventListener("keydown", (evt) => this.onKey(evt));
    // Where candidate `i` is drawn, in page pixels (lets the browser tests hover a real point).
    stats.pixelOf = (i) => {
      const { x, y } = this.scatter.getDatasetMeta(0).data[i].getProps(["x", "y"]);
      const r = this.scatterCanvas.getBoundingClientRect();
      return { x: r.left + x, y: r.top + y };
    };
  }

  kind() {
    return this.job && this.job.target ? this.job.target.kind : "flops";
  }

  runtime() {
    return (this.job && this.job.runtime) || "eager";
  }

  finished() {
    return Boolean(this.job && this.job.summary);
  }

  // What the score axis and labels call the score ("accuracy" unless the summary names another).
  scoreName() {
    return scoreNameOf(this.job && this.job.summary);
  }

  channels() {
    return (this.job && this.job.summary && this.job.summary.original_channels) || null;
  }

  // The chosen policy: for a finished job the candidate the summary reports (same search
  // score, within the budget); while running, the best candidate so far within the budget.
  chosen() {
    const job = this.job;
    if (!job) return null;
    const budget = budgetOf(job, this.events);
    const k = this.kind();
    const fits = (c) => budget === null || (resourceOf(c, k) ?? Infinity) <= budget * (1 + 1e-9);
    const s = job.summary;
    if (s && s.search_score !== undefined) {
      const hit = this.candidates.filter((c) => Math.abs(Number(c.score) - Number(s.search_score)) < 1e-9 && fits(c));
      if (hit.length) return hit.reduce((a, b) => ((resourceOf(a, k) ?? 0) <= (resourceOf(b, k) ?? 0) ? a : b));
    }
    let best = null;
    for (const c of this.candidates) if (fits(c) && (best === null || Number(c.score) > Number(best.score))) best = c;
    return best || (job.best && job.best.score !== undefined ? job.best : null);
  }

  // New state from a poll: the job, all events so far, and the candidates new since the last.
  update(job, events, newCandidates) {
    this.job = job;
    this.events = events;
    this.candidates.push(...newCandidates);
    const seen = new Set(this.layerKeys);
    for (const c of newCandidates) for (const key of Object.keys(c.policy || {})) if (!seen.has(key)) (seen.add(key), this.layerKeys.push(key));
    const chosen = this.chosen();
    this.redrawScatter(newCandidates, chosen);
    this.redrawPolicy(chosen);
    if (newCandidates.length) {
      this.redrawReward();
      this.redrawSensitivity();
    }
  }

  describe(p) {
    const c = p.c;
    const lines = [`#${idOf(c)} · ${c.phase || ""}`, `${this.scoreName()} ${fmtScore(c.score)}`, `${resourceLabel(this.kind(), this.runtime())}: ${fmtCount(p.x)}`];
    const entries = Object.entries(c.policy || {});
    for (const [key, v] of entries.slice(0, 12)) lines.push(`  ${key}: ${Number.isInteger(v) && v >= 1 ? `${v} ch` : `${(Number(v) * 100).toFixed(0)}% pruned`}`);
    if (entries.length > 12) lines.push(`  … ${entries.length - 12} more layers (see Inspect)`);
    return lines;
  }

  showInspect(c, why) {
    this.inspected = c;
    this.inspectedWhy = why;
    const chosen = this.chosen();
    const isChosen = chosen !== null && idOf(chosen) === idOf(c);
    this.inspectBox.replaceChildren(
      el("h3", {}, `Candidate #${idOf(c)}`, isChosen ? el("span", { class: "badge status-succeeded" }, this.finished() ? "chosen" : "best so far") : null, why !== "default" ? el("span", { class: "muted small" }, why) : null),
      el(
        "dl",
        { class: "facts compact" },
        [[this.scoreName(), fmtScore(c.score)], ["FLOPs", fmtCount(c.flops)], ["params", fmtCount(c.params)], [`latency (${this.runtime()})`, fmtMs(c.latency_ms)], ["phase", c.phase || "—"], ["time", fmtTiming(c)]].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
      ),
      el("h4", {}, "Per-layer kept channels"),
      rateBars(c.policy, this.channels(), this.layerKeys),
    );
  }

  // Adds new candidates and redraws; skipped when nothing it shows has changed.
  redrawScatter(newOnes, chosen) {
    const t0 = performance.now();
    const ds = this.scatter.data.datasets;
    const k = this.kind();
    const budget = budgetOf(this.job, this.events);
    const key = JSON.stringify([ds[0].data.length + newOnes.length, chosen && idOf(chosen), budget, this.finished(), this.scoreName()]);
    if (key === this.scatterKey) return;
    this.scatterKey = key;
    for (const c of newOnes) {
      const x = resourceOf(c, k);
      if (x !== null && c.score !== null && c.score !== undefined) ds[0].data.push({ x, y: Number(c.score), c });
    }
    ds[1].data = paretoFront(ds[0].data);
    const cx = chosen ? resourceOf(chosen, k) : null;
    ds[2].data = chosen && cx !== null ? [{ x: cx, y: Number(chosen.score), c: chosen }] : [];
    ds[2].label = this.finished() ? "chosen policy" : "best so far within the target";
    const opts = this.scatter.options;
    opts.plugins.targetLine.value = budget;
    opts.plugins.targetLine.label = `target (${describeTarget(this.job.target)})`;
    opts.scales.x.title.text = resourceLabel(k, this.runtime());
    opts.scales.y.title.text = this.scoreName();
    if (budget !== null) {
      // "suggested" bounds only widen the axis, so the target line is always in view.
      opts.scales.x.suggestedMin = budget * 0.95;
      opts.scales.x.suggestedMax = budget * 1.05;
    }
    this.scatter.update("none");
    stats.points = ds[0].data.length;
    stats.scoreAxis = opts.scales.y.title.text;
    stats.lastRenderMs = performance.now() - t0;
    this.scatterNote.textContent = `${ds[0].data.length} candidates · ${ds[1].data.length} on the Pareto front${budget === null ? " · the target line appears once the original size is known" : ""}. Hover a point (or focus the chart and use ← →) to see its per-layer rates.`;
  }

  redrawPolicy(chosen) {
    const s = this.job.summary || {};
    const done = Boolean(s.kept_channels && s.original_channels);
    const policy = this.policy;
    this.policyCard.querySelector("h2").textContent = done ? "Chosen policy: channels per layer" : "Best policy so far: channels per layer";
    if (done) {
      const keys = Object.keys(s.original_channels);
      policy.data.labels = keys;
      policy.data.datasets[0].data = keys.map((k) => s.original_channels[k]);
      policy.data.datasets[1].data = keys.map((k) => s.kept_channels[k] ?? s.original_channels[k]);
      policy.options.scales.y.title.text = "channels";
      this.policyNote.textContent = "Grey: the original layer's output channels; blue: what the chosen policy keeps.";
    } else if (chosen && chosen.policy) {
      const keys = this.layerKeys.length ? this.layerKeys : Object.keys(chosen.policy);
      policy.data.labels = keys;
      policy.data.datasets[0].data = keys.map(() => 100);
      policy.data.datasets[1].data = keys.map((k) => Math.round((1 - Number(chosen.policy[k] ?? 0)) * 1000) / 10);
      policy.options.scales.y.title.text = "% of channels";
      this.policyNote.textContent = "Grey: the original layer (100 %); blue: the share the best candidate within the target keeps. Exact channel counts appear when the job finishes.";
    } else {
      this.policyNote.textContent = "No candidate yet.";
      return;
    }
    policy.update("none");
    if ((!this.inspected || this.inspectedWhy === "default") && chosen && chosen.policy) this.showInspect(chosen, "default");
  }

  // AMC: reward per episode, recomputed from each episode's candidate as the strategy does.
  redrawReward() {
    const rewardKind = ((this.job.raw.spec || {}).strategy || {}).options?.reward || "error";
    const warm = [];
    const agent = [];
    for (const c of this.candidates) {
      const m = c.meta || {};
      if (c.phase !== "episode" || m.episode === undefined) continue;
      (m.warmup ? warm : agent).push({ x: Number(m.episode), y: amcReward(c, this.kind(), rewardKind) });
    }
    if (!warm.length && !agent.length) return;
    this.rewardCard.hidden = false;
    if (!this.reward) this.reward = lineChart(this.rewardCanvas, { xLabel: "episode", yLabel: `reward (${rewardKind})` });
    const byX = (a, b) => a.x - b.x;
    stats.rewardPoints = warm.length + agent.length;
    setLines(this.reward, [{ label: "warm-up (random actions)", points: warm.sort(byX) }, { label: "agent", points: agent.sort(byX) }].filter((s) => s.points.length));
  }

  // Sensitivity analysis: score against the rate applied to one layer alone (Han et al. 2015's
  // AlexNet plot); the unpruned model's score is every curve's point at rate 0.
  redrawSensitivity() {
    const byLayer = new Map();
    let baseScore = null;
    for (const c of this.candidates) {
      const m = c.meta || {};
      if (m.layer === undefined || m.rate === undefined) continue;
      if (!m.layer) {
        baseScore = Number(c.score);
        continue;
      }
      if (!byLayer.has(m.layer)) byLayer.set(m.layer, []);
      byLayer.get(m.layer).push({ x: Number(m.rate), y: Number(c.score) });
    }
    if (!byLayer.size) return;
    this.sensCard.hidden = false;
    if (!this.sens) this.sens = lineChart(this.sensCanvas, { xLabel: "pruning rate of the layer alone", yLabel: this.scoreName() });
    this.sens.options.scales.y.title.text = this.scoreName();
    const withBase = (points) => (baseScore !== null ? [{ x: 0, y: baseScore }, ...points] : points);
    setLines(this.sens, [...byLayer].map(([label, points]) => ({ label, points: withBase(points).sort((a, b) => a.x - b.x) })));
  }

  // ← → step through candidates by resource, Home/End jump to the cheapest/largest.
  onKey(evt) {
    const pts = this.scatter.data.datasets[0].data;
    if (!pts.length || !["ArrowLeft", "ArrowRight", "Home", "End"].includes(evt.key)) return;
    evt.preventDefault();
    const order = pts.map((_p, i) => i).sort((a, b) => pts[a].x - pts[b].x);
    let pos = order.indexOf(this.cursorIndex);
    if (evt.key === "ArrowRight") pos = Math.min(order.length - 1, pos + 1);
    else if (evt.key === "ArrowLeft") pos = Math.max(0, pos - 1);
    else pos = evt.key === "Home" ? 0 : order.length - 1;
    this.cursorIndex = order[pos];
    const active = [{ datasetIndex: 0, index: this.cursorIndex }];
    this.scatter.setActiveElements(active);
    const { x, y } = this.scatter.getDatasetMeta(0).data[this.cursorIndex].getProps(["x", "y"]);
    this.scatter.tooltip.setActiveElements(active, { x, y });
    this.scatter.update("none");
    this.showInspect(pts[this.cursorIndex].c, "selected");
  }

  destroy() {
    for (const chart of [this.scatter, this.policy, this.reward, this.sens]) if (chart) chart.destroy();
  }
}
