// One job's page, live while it runs: status, phase, progress, elapsed/ETA, cancel, events, the
// candidate panels (candidates.js) and, once finished, the result (results.js) or the error.
// Candidates and events are polled incrementally with `?after=` cursors.

import { get, itemsOf, post } from "../api.js";
import { cursorOf, describeTarget, FINAL, normJob } from "../model.js";
import { Poller, el, fmtDuration, fmtScore, parseTime, plural, progressBar, statusBadge } from "../util.js";
import { CandidatePanels, card } from "./candidates.js";
import { renderResults } from "./results.js";

const POLL_MS = 1500;
const PAGE = 1000; // candidates/events asked per request; more pages are read in the same tick

// Straight-line extrapolation of the progress so far; too early to say below 3 %.
function eta(job, elapsed) {
  if (job.status !== "running" || elapsed === null) return "—";
  return job.progress >= 0.03 && job.progress < 1 ? `~${fmtDuration((elapsed * (1 - job.progress)) / job.progress)}` : "estimating…";
}

function errorContent(job) {
  if (job.status === "cancelled") return [el("strong", {}, "Cancelled."), job.error ? ` ${job.error}` : ""];
  const lines = String(job.error || "the job failed without a message").split("\n");
  const rest = [lines.slice(1).join("\n"), job.traceback || ""].filter(Boolean).join("\n\n");
  return [el("strong", {}, "The job failed: "), lines[0], rest ? el("details", {}, el("summary", {}, "Details"), el("pre", {}, rest)) : null];
}

export function mountJob(root, jobId) {
  const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const state = { job: null, events: [], candAfter: 0, evAfter: 0, artifacts: null };
  const panels = new CandidatePanels();

  const title = el("h1", { id: "job-title" }, `Job ${jobId}`);
  const badge = el("span", { id: "job-status" });
  const meta = el("p", { class: "muted", id: "job-meta" });
  const cancelBtn = el("button", { type: "button", id: "cancel", class: "danger", hidden: true }, "Cancel job");
  const keepBtn = el("button", { type: "button", id: "cancel-keep" }, "Keep running");
  const confirmBtn = el("button", { type: "button", id: "cancel-confirm", class: "danger" }, "Yes, cancel it");
  const confirmBox = el("span", { class: "confirm", hidden: true }, "Stop this job? ", confirmBtn, keepBtn);
  const cancelMsg = el("span", { class: "muted", role: "status" });
  const phase = el("p", { class: "phase", id: "job-phase", "aria-live": "polite" });
  const bar = el("div", { id: "job-progress" });
  const facts = el("dl", { class: "facts", id: "job-facts" });
  const errorBox = el("div", { class: "error-box", id: "job-error", role: "alert", hidden: true });
  const loadError = el("p", { class: "error", role: "alert", hidden: true });
  const resultsBody = el("div", { id: "results-body" });
  const resultsCard = card("Result", "results", resultsBody);
  const eventsList = el("ol", { class: "events", id: "events" });
  resultsCard.hidden = true;

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
    panels.scatterGrid,
    el("div", { class: "grid-2" }, panels.policyCard, card("Events", "events-card", eventsList)),
    panels.rewardCard,
    panels.sensCard,
  );

  function renderHead() {
    const job = state.job;
    const s = job.summary || {};
    const running = !FINAL.has(job.status);
    const done = job.status === "succeeded";
    document.title = `${job.name} · Secateurs`;
    title.textContent = job.name;
    badge.replaceChildren(statusBadge(job.status));
    meta.textContent = `#${job.id} · model ${job.model} · data ${job.data} · strategy ${job.strategy} · target ${describeTarget(job.target)} · runtime ${job.runtime}`;
    cancelBtn.hidden = !running || !confirmBox.hidden;
    if (!running) {
      confirmBox.hidden = true;
      cancelMsg.textContent = "";
    }
    if (done && s.candidates !== undefined) phase.textContent = `Done: ${plural(s.candidates, "candidate")} in ${fmtDuration(s.search_seconds)} of search`;
    else if (job.status === "queued") phase.textContent = "Waiting for a worker";
    else phase.textContent = job.phase || job.status;
    const fraction = done ? 1 : job.progress;
    bar.replaceChildren(progressBar(fraction, "job progress"), el("span", { class: "progress-label" }, `${Math.round(fraction * 100)} %`));

    const start = parseTime(job.startedAt);
    const end = parseTime(job.finishedAt) ?? (running ? Date.now() : null);
    const elapsed = start && end ? (end - start) / 1000 : null;
    const best = panels.chosen();
    const items = [
      ["Elapsed", fmtDuration(elapsed)],
      ["ETA", eta(job, elapsed)],
      ["Candidates", String(job.candidates ?? panels.candidates.length)],
      done && s.accuracy_after !== undefined ? [`Final ${job.scoreName}`, fmtScore(s.accuracy_after)] : ["Best within target", fmtScore(best ? Number(best.score) : null)],
    ];
    facts.replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

    errorBox.hidden = !(job.status === "failed" || job.status === "cancelled");
    if (!errorBox.hidden) errorBox.replaceChildren(...errorContent(job));
  }

  function renderEvents(newOnes) {
    for (const e of newOnes) {
      const t = parseTime(e.created_at);
      eventsList.prepend(el("li", {}, el("time", { class: "muted" }, t ? new Date(t).toLocaleTimeString() : ""), " ", el("strong", {}, e.kind || "event"), " ", e.message || ""));
    }
    while (eventsList.children.length > 200) eventsList.lastChild.remove();
  }

  // Everything after `after`, a page at a time (a job may have thousands of candidates).
  async function drain(path, after) {
    const out = [];
    let cursor = after;
    for (let page = 0; page < 20; page++) {
      const items = itemsOf(await get(`${base}/${path}?after=${cursor}&limit=${PAGE}`));
      out.push(...items);
      if (items.length) cursor = Math.max(cursor, ...items.map(cursorOf));
      if (items.length < PAGE) break;
    }
    return { items: out, cursor };
  }

  let alive = true;
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
    const wasFinal = state.job !== null && FINAL.has(state.job.status);
    const job = normJob(raw);
    const cands = await drain("candidates", state.candAfter);
    const evs = await drain("events", state.evAfter);
    if (!alive) return false; // the user left this page while the requests were in flight
    state.job = job;
    state.candAfter = cands.cursor;
    state.evAfter = evs.cursor;
    state.events.push(...evs.items);

    panels.update(job, state.events, cands.items);
    renderHead();
    renderEvents(evs.items);
    const final = FINAL.has(job.status);
    if (final && job.status === "succeeded" && state.artifacts === null) {
      try {
        state.artifacts = itemsOf(await get(`${base}/artifacts`));
      } catch {
        state.artifacts = [];
      }
      if (!alive) return false;
    }
    if (final) resultsCard.hidden = !renderResults(resultsBody, job.summary, state.artifacts, base);
    // One more round after the job ends picks up anything written just before it did.
    return !(final && wasFinal);
  }

  cancelBtn.addEventListener("click", () => {
    cancelBtn.hidden = true;
    confirmBox.hidden = false;
    keepBtn.focus();
  });
  keepBtn.addEventListener("click", () => {
    confirmBox.hidden = true;
    cancelBtn.hidden = false;
    cancelBtn.focus();
  });
  confirmBtn.addEventListener("click", async () => {
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

  const poller = new Poller(tick, POLL_MS).start();
  const clock = setInterval(() => {
    if (state.job && state.job.status === "running" && !document.hidden) renderHead();
  }, 1000);
  return () => {
    alive = false;
    poller.stop();
    clearInterval(clock);
    panels.destroy();
  };
}
