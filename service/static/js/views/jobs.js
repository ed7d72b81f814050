// The jobs list: one row per job, updated in place by polling (rows are never rebuilt, so
// focus and scroll stay put), filtered by status, paginated with the API's limit/offset.

import { get, itemsOf } from "../api.js";
import { describeTarget, normJob, STATUSES } from "../model.js";
import { Poller, ago, el, fmtScore, progressBar, statusBadge } from "../util.js";

const PAGE = 50;

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function buildRow(job) {
  const link = el("a", { href: `#/jobs/${encodeURIComponent(job.id)}` });
  const cells = {
    name: el("td", {}, link),
    model: el("td"),
    strategy: el("td"),
    target: el("td"),
    status: el("td"),
    progress: el("td", { class: "col-progress" }),
    best: el("td", { class: "num" }),
    age: el("td", { class: "num muted" }),
  };
  const row = el("tr", { "data-job-id": String(job.id) }, Object.values(cells));
  row.addEventListener("click", (evt) => {
    if (evt.target.tagName !== "A") location.hash = link.getAttribute("href");
  });
  return { row, link, cells, key: "" };
}

function updateRow(entry, job) {
  const { link, cells } = entry;
  setText(link, job.name);
  setText(cells.age, ago(job.createdAt));
  const key = JSON.stringify([job.name, job.model, job.strategy, job.status, job.progress, job.bestScore, job.target, job.phase]);
  if (key === entry.key) return;
  entry.key = key;
  setText(cells.model, job.model);
  setText(cells.strategy, job.strategy);
  setText(cells.target, describeTarget(job.target));
  cells.status.replaceChildren(statusBadge(job.status));
  cells.progress.replaceChildren(progressBar(job.status === "succeeded" ? 1 : job.progress, `progress of ${job.name}`));
  cells.progress.title = job.phase;
  setText(cells.best, fmtScore(job.bestScore));
}

export function mountJobs(root) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  let status = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  let offset = 0;
  const rows = new Map();

  const filter = el("select", { id: "status-filter", name: "status" }, el("option", { value: "" }, "all"), STATUSES.map((s) => el("option", { value: s }, s)));
  filter.value = status;
  const tbody = el("tbody");
  const empty = el("p", { class: "muted empty", hidden: true }, "No jobs yet. ", el("a", { href: "#/submit" }, "Submit one"), ".");
  const error = el("p", { class: "error", role: "alert", hidden: true });
  const prev = el("button", { type: "button", disabled: true }, "← Newer");
  const next = el("button", { type: "button", disabled: true }, "Older →");
  const pageInfo = el("span", { class: "muted" });

  root.append(
    el(
      "section",
      { class: "card" },
      el("div", { class: "card-head" }, el("h1", {}, "Jobs"), el("span", { class: "spacer" }), el("label", { for: "status-filter" }, "Status "), filter, el("a", { class: "button primary", href: "#/submit" }, "New job")),
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "jobs", id: "jobs-table" },
          el("thead", {}, el("tr", {}, ["Name", "Model", "Strategy", "Target", "Status", "Progress", "Best score", "Age"].map((h) => el("th", { scope: "col" }, h)))),
          tbody,
        ),
      ),
      empty,
      error,
      el("div", { class: "pager" }, prev, pageInfo, next),
    ),
  );

  async function tick() {
    const q = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    if (status) q.set("status", status);
    let data;
    try {
      data = await get(`/v1/jobs?${q}`);
      error.hidden = true;
    } catch (err) {
      if (err.status === 401) return false;
      error.textContent = `Could not load jobs: ${err.message}`;
      error.hidden = false;
      return true;
    }
    const jobs = itemsOf(data).map(normJob);
    const seen = new Set();
    let before = null;
    // Walk the API's order from the bottom, inserting/moving rows only where needed.
    for (let i = jobs.length - 1; i >= 0; i--) {
      const job = jobs[i];
      const id = String(job.id);
      seen.add(id);
      let entry = rows.get(id);
      if (!entry) {
        entry = buildRow(job);
        rows.set(id, entry);
      }
      updateRow(entry, job);
      const ref = before ? before : null;
      if (entry.row.parentNode !== tbody || entry.row.nextSibling !== ref) tbody.insertBefore(entry.row, ref);
      before = entry.row;
    }
    for (const [id, entry] of rows) {
      if (!seen.has(id)) {
        entry.row.remove();
        rows.delete(id);
      }
    }
    const total = Array.isArray(data) ? null : data.total ?? null;
    empty.hidden = jobs.length > 0 || offset > 0;
    prev.disabled = offset === 0;
    next.disabled = total !== null ? offset + PAGE >= total : jobs.length < PAGE;
    pageInfo.textContent = jobs.length ? `${offset + 1}–${offset + jobs.length}${total !== null ? ` of ${total}` : ""}` : "";
    return true;
  }

  const poller = new Poller(tick, 2000).start();
  const restart = () => {
    clearTimeout(poller.timer);
    if (!poller.running) poller.run();
  };
  filter.addEventListener("change", () => {
    status = filter.value;
    offset = 0;
    history.replaceState(null, "", status ? `#/jobs?status=${status}` : "#/jobs");
    restart();
  });
  prev.addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE);
    restart();
  });
  next.addEventListener("click", () => {
    offset += PAGE;
    restart();
  });
  return () => poller.stop();
}
