// One job's page, live while it runs: phase, progress, elapsed/ETA, the candidate scatter
// (resource vs score, target line, Pareto front, chosen policy, per-layer rates on hover), the
// chosen policy's channels per layer, AMC rewards and sensitivity curves when present, and
// when finished the before/after table and artifact downloads (or the error).

import { download, get, itemsOf, post } from "../api.js";
import { lineChart, policyChart, scatterChart, setLines } from "../charts.js";
import { budgetOf, cursorOf, describeTarget, FINAL, normJob, paretoFront, resourceLabel, resourceOf } from "../model.js";
import { Poller, el, fmtBytes, fmtCount, fmtDuration, fmtMs, fmtScore, parseTime } from "../util.js";
import { progressBar, statusBadge } from "./jobs.js";

const POLL_MS = 1500;
const PAGE = 1000; // candidates/events asked per request; more pages are read in the same tick

// Exposed for the browser tests and for anyone curious about render cost.
const stats = (window.__secateurs = window.__secateurs || {});

function card(title, id, ...body) {
  return el("section", { class: "card", id, "aria-labelledby": `${id}-title` }, el("h2", { id: `${id}-title` }, title), ...body);
}

function chartBox(canvas, extraClass = "") {
  return el("div", { class: `chart ${extraClass}` }, canvas);
}

// Per-layer rates of a policy: {key: rate in [0,1)} or kept channel counts (ints ≥ 1).
function policyEntries(policy) {
  return Object.entries(policy || {}).map(([key, v]) => ({ key, value: Number(v) }));
}

function rateBars(policy, channels, keys) {
  const list = el("ol", { class: "rates" });
  const names = channels ? Object.keys(channels) : keys && keys.length ? keys : Object.keys(policy || {});
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

// Artifact URLs are absolute; keep only the path so the download stays on this origin (the
// page's CSP allows no other, and behind a proxy the API may not know its public host).
function sameOrigin(url) {
  if (!url) return null;
  const u = new URL(url, location.href);
  return u.pathname + u.search;
}

// Original channels per layer when the API reports them (the summary of a finished job).
function channelsOf(job) {
  const s = job.summary || {};
  return s.original_channels || null;
}

// AMC's reward for an episode (search/amc/env.py `reward_value`): -error, or -error·log(resource).
function amcReward(c, kind, rewardKind) {
  const m = c.meta || {};
  if (m.reward !== undefined && m.reward !== null) return Number(m.reward);
  const error = 1 - Number(c.score);
  if (rewardKind === "resource") return -error * Math.log(Math.max(Number(resourceOf(c, kind)) || 0, 1 + 1e-9));
  return -error;
}

export function mountJob(root, jobId) {
  const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const state = { job: null, candidates: [], events: [], candAfter: 0, evAfter: 0, artifacts: null, inspected: null, finalDrained: false };

  // --- layout -------------------------------------------------------------------------
  const title = el("h1", { id: "job-title" }, `Job ${jobId}`);
  const badge = el("span", { id: "job-status" });
  const meta = el("p", { class: "muted", id: "job-meta" });
  const cancelBtn = el("button", { type: "button", id: "cancel", class: "danger", hidden: true }, "Cancel job");
  const confirmBox = el(
    "span",
    { class: "confirm", hidden: true },
    "Stop this job? ",
    el("button", { type: "button", id: "cancel-confirm", class: "danger" }, "Yes, cancel it"),
    el("button", { type: "button", id: "cancel-keep" }, "Keep running"),
  );
  const cancelMsg = el("span", { class: "muted", role: "status" });
  const phase = el("p", { class: "phase", id: "job-phase", "aria-live": "polite" });
  const bar = el("div", { id: "job-progress" });
  const facts = el("dl", { class: "facts", id: "job-facts" });
  const errorBox = el("div", { class: "error-box", id: "job-error", role: "alert", hidden: true });
  const loadError = el("p", { class: "error", role: "alert", hidden: true });

  const scatterCanvas = el("canvas", { id: "scatter", tabindex: "0", role: "img", "aria-label": "Candidates: resource against score. Arrow keys step through candidates." });
  const inspect = el("div", { class: "inspect", id: "inspect", "aria-live": "polite" });
  const scatterNote = el("p", { class: "muted small", id: "scatter-note" });
  const policyCanvas = el("canvas", { id: "policy", role: "img", "aria-label": "Chosen policy: channels per layer, original and kept" });
  const policyNote = el("p", { class: "muted small" });
  const rewardCanvas = el("canvas", { id: "reward", role: "img", "aria-label": "AMC reward per episode" });
  const sensCanvas = el("canvas", { id: "sensitivity", role: "img", "aria-label": "Sensitivity: score against pruning rate per layer" });
  const resultsBody = el("div", { id: "results-body" });
  const eventsList = el("ol", { class: "events", id: "events" });

  const rewardCard = card("AMC reward per episode", "reward-card", chartBox(rewardCanvas));
  const sensCard = card("Sensitivity: score against pruning rate, per layer", "sens-card", chartBox(sensCanvas, "tall"));
  const resultsCard = card("Result", "results", resultsBody);
  const policyCard = card("Chosen policy: channels per layer", "policy-card", chartBox(policyCanvas), policyNote);
  rewardCard.hidden = sensCard.hidden = resultsCard.hidden = true;

  root.append(
    el("p", { class: "crumbs" }, el("a", { href: "#/jobs" }, "← All jobs")),
    el(
      "section",
      { class: "card job-head" },
      el("div", { class: "card-head" }, title, badge, el("span", { class: "spacer" }), cancelMsg, confirmBox, cancelBtn),
      meta,
      phase,
      bar,
      facts,
      errorBox,
      loadError,
    ),
    resultsCard,
    el(
      "div",
      { class: "grid-main" },
      card("Candidates", "candidates-card", chartBox(scatterCanvas, "tall"), scatterNote),
      card("Inspect", "inspect-card", inspect),
    ),
    el("div", { class: "grid-2" }, policyCard, card("Events", "events-card", eventsList)),
    rewardCard,
    sensCard,
  );

  // --- charts -------------------------------------------------------------------------
  const kind = () => (state.job && state.job.target ? state.job.target.kind : "flops");
  const describe = (p) => {
    const c = p.c;
    const lines = [`#${c.proposal_id ?? c.seq ?? c.id} · ${c.phase || ""}`, `score ${fmtScore(c.score)}`, `${resourceLabel(kind())}: ${fmtCount(p.x)}`];
    const entries = policyEntries(c.policy);
    for (const { key, value } of entries.slice(0, 12)) lines.push(`  ${key}: ${Number.isInteger(value) && value >= 1 ? value + " ch" : (value * 100).toFixed(0) + "% pruned"}`);
    if (entries.length > 12) lines.push(`  … ${entries.length - 12} more layers (see Inspect)`);
    return lines;
  };
  const scatter = scatterChart(scatterCanvas, { xLabel: resourceLabel(kind()), yLabel: "score", describe, onInspect: (p) => showInspect(p.c, "hovered") });
  const policy = policyChart(policyCanvas);
  // Where candidate `i` is drawn, in page pixels (lets the browser tests hover a real point).
  stats.pixelOf = (i) => {
    const { x, y } = scatter.getDatasetMeta(0).data[i].getProps(["x", "y"]);
    const r = scatterCanvas.getBoundingClientRect();
    return { x: r.left + x, y: r.top + y };
  };
  let reward = null;
  let sens = null;
  let channels = null;

  function showInspect(c, why) {
    state.inspected = c;
    state.inspectedWhy = why;
    const chosen = isChosen(c);
    inspect.replaceChildren(
      el("h3", {}, `Candidate #${idOf(c)}`, chosen ? el("span", { class: "badge status-succeeded" }, finished() ? "chosen" : "best so far") : null, why !== "default" ? el("span", { class: "muted small" }, why) : null),
      el(
        "dl",
        { class: "facts compact" },
        el("dt", {}, "score"), el("dd", {}, fmtScore(c.score)),
        el("dt", {}, "FLOPs"), el("dd", {}, fmtCount(c.flops)),
        el("dt", {}, "params"), el("dd", {}, fmtCount(c.params)),
        el("dt", {}, "latency"), el("dd", {}, fmtMs(c.latency_ms)),
        el("dt", {}, "phase"), el("dd", {}, c.phase || "—"),
      ),
      el("h4", {}, "Per-layer kept channels"),
      rateBars(c.policy, channels, layerKeys),
    );
  }

  const idOf = (c) => c.proposal_id ?? c.seq ?? c.id;
  const finished = () => Boolean(state.job && state.job.summary);

  // The chosen policy: for a finished job the candidate the summary reports (same search
  // score, within the budget); while running, the best candidate so far within the budget.
  function chosenCandidate() {
    const job = state.job;
    if (!job) return null;
    const budget = budgetOf(job, state.events);
    const k = kind();
    const fits = (c) => budget === null || (resourceOf(c, k) ?? Infinity) <= budget * (1 + 1e-9);
    const s = job.summary;
    if (s && s.search_score !== undefined) {
      const hit = state.candidates.filter((c) => Math.abs(Number(c.score) - Number(s.search_score)) < 1e-9 && fits(c));
      if (hit.length) return hit.reduce((a, b) => ((resourceOf(a, k) ?? 0) <= (resourceOf(b, k) ?? 0) ? a : b));
    }
    let best = null;
    for (const c of state.candidates) if (fits(c) && (best === null || Number(c.score) > Number(best.score))) best = c;
    return best || (job.best && job.best.score !== undefined ? job.best : null);
  }

  function isChosen(c) {
    const chosen = chosenCandidate();
    return chosen !== null && idOf(chosen) === idOf(c);
  }

  // Layer keys in the order candidates first name them (a policy may leave layers out).
  const layerKeys = [];
  const layerSeen = new Set();
  function noteLayers(cands) {
    for (const c of cands) for (const key of Object.keys(c.policy || {})) if (!layerSeen.has(key)) (layerSeen.add(key), layerKeys.push(key));
  }

  let scatterKey = "";

  // Adds new candidates and redraws; skipped when nothing it shows has changed.
  function redrawScatter(newOnes) {
    const t0 = performance.now();
    const ds = scatter.data.datasets;
    const k = kind();
    const chosen = chosenCandidate();
    const key = JSON.stringify([ds[0].data.length + newOnes.length, chosen && idOf(chosen), budgetOf(state.job, state.events), Boolean(state.job.summary)]);
    if (key === scatterKey) return;
    scatterKey = key;
    for (const c of newOnes) {
      const x = resourceOf(c, k);
      if (x !== null && c.score !== null && c.score !== undefined) ds[0].data.push({ x, y: Number(c.score), c });
    }
    ds[1].data = paretoFront(ds[0].data);
    const cx = chosen ? resourceOf(chosen, k) : null;
    ds[2].data = chosen && cx !== null ? [{ x: cx, y: Number(chosen.score), c: chosen }] : [];
    ds[2].label = state.job && state.job.summary ? "chosen policy" : "best so far within the target";
    const budget = state.job ? budgetOf(state.job, state.events) : null;
    scatter.options.plugins.targetLine.value = budget;
    scatter.options.plugins.targetLine.label = state.job ? `target (${describeTarget(state.job.target)})` : "target";
    scatter.options.scales.x.title.text = resourceLabel(k);
    if (budget !== null) {
      // "suggested" bounds only widen the axis, so the target line is always in view.
      scatter.options.scales.x.suggestedMin = budget * 0.95;
      scatter.options.scales.x.suggestedMax = budget * 1.05;
    }
    scatter.update("none");
    stats.points = ds[0].data.length;
    stats.lastRenderMs = performance.now() - t0;
    scatterNote.textContent = `${ds[0].data.length} candidates · ${ds[1].data.length} on the Pareto front${budget === null ? " · target line appears once the original size is known" : ""}. Hover a point (or focus the chart and use ← →) to see its per-layer rates.`;
  }

  function redrawPolicy() {
    const s = (state.job && state.job.summary) || {};
    const done = Boolean(s.kept_channels && s.original_channels);
    const chosen = chosenCandidate();
    policyCard.querySelector("h2").textContent = done ? "Chosen policy: channels per layer" : "Best policy so far: channels per layer";
    if (done) {
      const keys = Object.keys(s.original_channels);
      policy.data.labels = keys;
      policy.data.datasets[0].data = keys.map((k) => s.original_channels[k]);
      policy.data.datasets[1].data = keys.map((k) => s.kept_channels[k] ?? s.original_channels[k]);
      policy.options.scales.y.title.text = "channels";
      policyNote.textContent = "Grey: the original layer's output channels; blue: what the chosen policy keeps.";
    } else if (chosen && chosen.policy) {
      const keys = layerKeys.length ? layerKeys : Object.keys(chosen.policy);
      policy.data.labels = keys;
      policy.data.datasets[0].data = keys.map(() => 100);
      policy.data.datasets[1].data = keys.map((k) => Math.round((1 - Number(chosen.policy[k] ?? 0)) * 1000) / 10);
      policy.options.scales.y.title.text = "% of channels";
      policyNote.textContent = "Grey: the original layer (100 %); blue: the share the best candidate within the target keeps. Exact channel counts appear when the job finishes.";
    } else {
      policyNote.textContent = "No candidate yet.";
      return;
    }
    policy.update("none");
    if ((!state.inspected || state.inspectedWhy === "default") && chosen && chosen.policy) showInspect(chosen, "default");
  }

  // AMC: reward per episode, recomputed from each episode's candidate as the strategy does.
  function redrawReward() {
    const rewardKind = ((state.job.raw.spec || {}).strategy || {}).options?.reward || "error";
    const warm = [];
    const agent = [];
    for (const c of state.candidates) {
      const m = c.meta || {};
      if (c.phase !== "episode" || m.episode === undefined) continue;
      (m.warmup ? warm : agent).push({ x: Number(m.episode), y: amcReward(c, kind(), rewardKind) });
    }
    if (!warm.length && !agent.length) return;
    rewardCard.hidden = false;
    if (!reward) reward = lineChart(rewardCanvas, { xLabel: "episode", yLabel: `reward (${rewardKind})` });
    const byX = (a, b) => a.x - b.x;
    stats.rewardPoints = warm.length + agent.length;
    setLines(reward, [{ label: "warm-up (random actions)", points: warm.sort(byX) }, { label: "agent", points: agent.sort(byX) }].filter((s) => s.points.length));
  }

  // Sensitivity analysis: score against the rate applied to one layer alone (Han et al. 2015's
  // AlexNet plot); the unpruned model's score is every curve's point at rate 0.
  function redrawSensitivity() {
    const byLayer = new Map();
    let baseScore = null;
    for (const c of state.candidates) {
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
    sensCard.hidden = false;
    if (!sens) sens = lineChart(sensCanvas, { xLabel: "pruning rate of the layer alone", yLabel: "score" });
    setLines(sens, [...byLayer].map(([label, points]) => ({ label, points: (baseScore !== null ? [{ x: 0, y: baseScore }, ...points] : points).sort((a, b) => a.x - b.x) })));
  }

  function renderEvents(newOnes) {
    for (const e of newOnes) {
      const t = parseTime(e.created_at);
      eventsList.prepend(
        el("li", {}, el("time", { class: "muted" }, t ? new Date(t).toLocaleTimeString() : ""), " ", el("strong", {}, e.kind || "event"), " ", e.message || ""),
      );
    }
    while (eventsList.children.length > 200) eventsList.lastChild.remove();
  }

  function renderHead() {
    const job = state.job;
    document.title = `${job.name} · Secateurs`;
    title.textContent = job.name;
    badge.replaceChildren(statusBadge(job.status));
    meta.textContent = `#${job.id} · model ${job.model} · data ${job.data} · strategy ${job.strategy} · target ${describeTarget(job.target)}`;
    const running = !FINAL.has(job.status);
    cancelBtn.hidden = !running || !confirmBox.hidden;
    if (!running) {
      confirmBox.hidden = true;
      cancelMsg.textContent = "";
    }
    const done = job.status === "succeeded";
    const s = job.summary || {};
    if (done && s.candidates !== undefined) phase.textContent = `Done: ${s.candidates} candidates in ${fmtDuration(s.search_seconds)} of search`;
    else if (job.status === "queued") phase.textContent = "Waiting for a worker";
    else phase.textContent = job.phase || job.status;
    bar.replaceChildren(progressBar(done ? 1 : job.progress, "job progress"), el("span", { class: "progress-label" }, `${Math.round((done ? 1 : job.progress) * 100)} %`));

    const start = parseTime(job.startedAt);
    const end = parseTime(job.finishedAt) ?? (running ? Date.now() : null);
    const elapsed = start && end ? (end - start) / 1000 : null;
    let eta = "—";
    if (job.status === "running" && elapsed !== null) {
      // Straight-line extrapolation of progress so far; too early to say below 3 %.
      eta = job.progress >= 0.03 && job.progress < 1 ? `~${fmtDuration((elapsed * (1 - job.progress)) / job.progress)}` : "estimating…";
    }
    const bestWithin = chosenCandidate();
    const items = [
      ["Elapsed", fmtDuration(elapsed)],
      ["ETA", eta],
      ["Candidates", String(job.candidates ?? state.candidates.length)],
      done && s.accuracy_after !== undefined ? ["Final accuracy", fmtScore(s.accuracy_after)] : ["Best within target", fmtScore(bestWithin ? Number(bestWithin.score) : null)],
    ];
    facts.replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-fact": k.toLowerCase() }, v)]));

    if (job.status === "failed") {
      const lines = String(job.error || "the job failed without a message").split("\n");
      errorBox.replaceChildren(
        el("strong", {}, "The job failed: "),
        lines[0],
        lines.length > 1 || job.traceback ? el("details", {}, el("summary", {}, "Details"), el("pre", {}, [lines.slice(1).join("\n"), job.traceback || ""].filter(Boolean).join("\n\n"))) : null,
      );
      errorBox.hidden = false;
    } else if (job.status === "cancelled") {
      errorBox.replaceChildren(el("strong", {}, "Cancelled."), job.error ? ` ${job.error}` : "");
      errorBox.hidden = false;
    } else errorBox.hidden = true;
  }

  function renderResults() {
    const s = state.job.summary;
    if (!s && !state.artifacts) return;
    resultsCard.hidden = false;
    const parts = [];
    if (s) {
      const sizeOf = (name) => (state.artifacts || []).find((a) => a.name === name || a.name.endsWith(`/${name}`));
      // Weights file sizes: the trained model the job started from, and the pruned one.
      const sizeBefore = s.size_bytes_before ?? (sizeOf("base_model.safetensors") || {}).size ?? null;
      const sizeAfter = s.size_bytes_after ?? (sizeOf("model.safetensors") || {}).size ?? null;
      const rows = [
        ["Accuracy", s.accuracy_before, s.accuracy_after, fmtScore, true],
        ["FLOPs (MACs)", s.flops_before, s.flops_after, fmtCount, false],
        ["Parameters", s.params_before, s.params_after, fmtCount, false],
        ["Latency (batch 1)", s.latency_ms_before, s.latency_ms_after, fmtMs, false],
        ["Weights size", sizeBefore, sizeAfter, fmtBytes, false],
      ];
      const change = (b, a, isScore) => {
        if (b === null || b === undefined || a === null || a === undefined) return "—";
        if (isScore) return `${((a - b) * 100 >= 0 ? "+" : "")}${((a - b) * 100).toFixed(2)} pts`;
        return b ? `×${(a / b).toFixed(3)}` : "—";
      };
      parts.push(
        el(
          "table",
          { class: "before-after", id: "before-after" },
          el("thead", {}, el("tr", {}, el("th", { scope: "col" }, ""), el("th", { scope: "col" }, "before"), el("th", { scope: "col" }, "after"), el("th", { scope: "col" }, "change"))),
          el("tbody", {}, rows.map(([label, b, a, fmt, isScore]) => el("tr", {}, el("th", { scope: "row" }, label), el("td", { class: "num" }, fmt(b ?? null)), el("td", { class: "num" }, fmt(a ?? null)), el("td", { class: "num" }, change(b, a, isScore))))),
        ),
      );
    }
    if (state.artifacts && state.artifacts.length) {
      const status = el("p", { class: "muted small", role: "status" });
      const fetchOne = async (a) => {
        status.textContent = `Downloading ${a.name}…`;
        try {
          await download(sameOrigin(a.url) || `${base}/artifacts/${encodeURIComponent(a.name)}`, a.name.split("/").pop());
          status.textContent = `Downloaded ${a.name}.`;
        } catch (err) {
          status.textContent = err.message;
        }
      };
      parts.push(
        el(
          "div",
          { class: "artifacts-box" },
          el("h3", {}, "Artifacts"),
          el(
            "table",
            { class: "artifacts", id: "artifacts" },
            el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "file"), el("th", { scope: "col", class: "num" }, "size"), el("th", { scope: "col" }, "sha256"))),
            el(
              "tbody",
              {},
              state.artifacts.map((a) =>
                el(
                  "tr",
                  {},
                  el("td", {}, el("button", { type: "button", class: "link", "data-artifact": a.name, onclick: () => fetchOne(a) }, `⤓ ${a.name}`)),
                  el("td", { class: "num" }, fmtBytes(a.size)),
                  el("td", {}, a.sha256 ? el("code", { class: "sha", title: a.sha256 }, `${a.sha256.slice(0, 12)}…`) : "—"),
                ),
              ),
            ),
          ),
          status,
        ),
      );
    }
    resultsBody.replaceChildren(...parts);
  }

  // --- polling ------------------------------------------------------------------------
  async function drain(path, after, key) {
    const out = [];
    let cursor = after;
    for (let page = 0; page < 20; page++) {
      const data = await get(`${base}/${path}?after=${cursor}&limit=${PAGE}`);
      const items = itemsOf(data, key);
      out.push(...items);
      if (items.length) cursor = Math.max(cursor, ...items.map(cursorOf));
      const nextAfter = data && !Array.isArray(data) ? data.next_after ?? data.after ?? null : null;
      if (nextAfter !== null && nextAfter !== undefined) cursor = Math.max(cursor, Number(nextAfter));
      if (items.length < PAGE) break;
    }
    return { items: out, cursor };
  }

  async function tick() {
    let raw;
    try {
      raw = await get(base);
      loadError.hidden = true;
    } catch (err) {
      if (err.status === 401) return false;
      loadError.textContent = err.status === 404 ? `No job ${jobId} for this team.` : `Could not load the job: ${err.message}`;
      loadError.hidden = false;
      return err.status !== 404;
    }
    if (!alive) return false;
    const wasFinal = state.job && FINAL.has(state.job.status);
    state.job = normJob(raw);
    const cands = await drain("candidates", state.candAfter, "candidates");
    state.candAfter = cands.cursor;
    state.candidates.push(...cands.items);
    const evs = await drain("events", state.evAfter, "events");
    if (!alive) return false; // the user left this page while the requests were in flight
    state.evAfter = evs.cursor;
    state.events.push(...evs.items);
    if (!channels) channels = channelsOf(state.job);
    noteLayers(cands.items);

    renderHead();
    renderEvents(evs.items);
    redrawScatter(cands.items);
    redrawPolicy();
    if (cands.items.length || evs.items.length) {
      redrawReward();
      redrawSensitivity();
    }
    const final = FINAL.has(state.job.status);
    if (final && state.job.status === "succeeded" && state.artifacts === null) {
      try {
        state.artifacts = itemsOf(await get(`${base}/artifacts`), "artifacts");
        if (!alive) return false;
      } catch (err) {
        state.artifacts = [];
      }
    }
    if (final) renderResults();
    // One more round after the job ends picks up anything written just before it did.
    if (final && wasFinal) return false;
    return true;
  }

  // --- keyboard and cancel ------------------------------------------------------------
  let cursorIndex = -1;
  scatterCanvas.addEventListener("keydown", (evt) => {
    const pts = scatter.data.datasets[0].data;
    if (!pts.length || !["ArrowLeft", "ArrowRight", "Home", "End"].includes(evt.key)) return;
    evt.preventDefault();
    const order = pts.map((p, i) => i).sort((a, b) => pts[a].x - pts[b].x);
    let pos = order.indexOf(cursorIndex);
    if (evt.key === "ArrowRight") pos = Math.min(order.length - 1, pos + 1);
    else if (evt.key === "ArrowLeft") pos = Math.max(0, pos < 0 ? 0 : pos - 1);
    else if (evt.key === "Home") pos = 0;
    else pos = order.length - 1;
    cursorIndex = order[pos];
    const active = [{ datasetIndex: 0, index: cursorIndex }];
    scatter.setActiveElements(active);
    const { x, y } = scatter.getDatasetMeta(0).data[cursorIndex].getProps(["x", "y"]);
    scatter.tooltip.setActiveElements(active, { x, y });
    scatter.update("none");
    showInspect(pts[cursorIndex].c, "selected");
  });

  cancelBtn.addEventListener("click", () => {
    cancelBtn.hidden = true;
    confirmBox.hidden = false;
    confirmBox.querySelector("#cancel-keep").focus();
  });
  confirmBox.querySelector("#cancel-keep").addEventListener("click", () => {
    confirmBox.hidden = true;
    cancelBtn.hidden = false;
    cancelBtn.focus();
  });
  confirmBox.querySelector("#cancel-confirm").addEventListener("click", async () => {
    confirmBox.hidden = true;
    cancelMsg.textContent = "Cancelling…";
    try {
      await post(`${base}/cancel`);
      cancelMsg.textContent = "Cancel requested; the job stops within seconds.";
      clearTimeout(poller.timer);
      if (!poller.running) poller.run();
    } catch (err) {
      cancelMsg.textContent = `Could not cancel: ${err.message}`;
      cancelBtn.hidden = false;
    }
  });

  let alive = true;
  const poller = new Poller(tick, POLL_MS).start();
  const clock = setInterval(() => {
    if (state.job && state.job.status === "running" && !document.hidden) renderHead();
  }, 1000);
  return () => {
    alive = false;
    poller.stop();
    clearInterval(clock);
    scatter.destroy();
    policy.destroy();
    if (reward) reward.destroy();
    if (sens) sens.destroy();
  };
}
