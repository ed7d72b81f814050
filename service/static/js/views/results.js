// A finished job's result: the before/after table from its summary and its artifacts, each
// downloaded through the page (with the token) and listed with size and sha256.

import { download, objectUrl } from "../api.js";
import { capitalised, scoreNameOf } from "../model.js";
import { el, fmtBytes, fmtCount, fmtMs, fmtScore } from "../util.js";

// Artifact URLs are absolute; keep only the path so the download stays on this origin (the
// page's CSP allows no other, and behind a proxy the API may not know its public host).
function sameOrigin(url) {
  if (!url) return null;
  const u = new URL(url, location.href);
  return u.pathname + u.search;
}

function change(before, after, isScore) {
  if (before === null || before === undefined || after === null || after === undefined) return "—";
  if (isScore) return `${after - before >= 0 ? "+" : ""}${((after - before) * 100).toFixed(2)} pts`;
  return before ? `×${(after / before).toFixed(3)}` : "—";
}

function beforeAfterTable(s, artifacts) {
  const sizeOf = (name) => (artifacts || []).find((a) => a.name === name);
  // Weights file sizes: the trained model the job started from, and the pruned one.
  const sizeBefore = s.size_bytes_before ?? (sizeOf("base_model.safetensors") || {}).size ?? null;
  const sizeAfter = s.size_bytes_after ?? (sizeOf("model.safetensors") || {}).size ?? null;
  const rows = [
    [capitalised(scoreNameOf(s)), s.accuracy_before, s.accuracy_after, fmtScore, true],
    ["FLOPs (MACs)", s.flops_before, s.flops_after, fmtCount, false],
    ["Parameters", s.params_before, s.params_after, fmtCount, false],
    [`Latency (batch 1, ${s.runtime || "eager"})`, s.latency_ms_before, s.latency_ms_after, fmtMs, false],
    ["Weights size", sizeBefore, sizeAfter, fmtBytes, false],
  ];
  return el(
    "table",
    { class: "before-after", id: "before-after" },
    el("thead", {}, el("tr", {}, ["", "before", "after", "change"].map((h) => el("th", { scope: "col" }, h)))),
    el(
      "tbody",
      {},
      rows.map(([label, b, a, fmt, isScore]) =>
        el("tr", {}, el("th", { scope: "row" }, label), el("td", { class: "num" }, fmt(b ?? null)), el("td", { class: "num" }, fmt(a ?? null)), el("td", { class: "num" }, change(b, a, isScore))),
      ),
    ),
  );
}

// FP32 beside INT8 (quantize: {mode: int8}): both scored on the test split and timed by ONNX Runtime.
function int8Table(q) {
  const rows = [
    ["Accuracy", q.accuracy_fp32, q.accuracy_int8, fmtScore, true],
    [`Latency (batch 1, onnxruntime, ${q.latency_threads} threads)`, q.latency_ms_fp32, q.latency_ms_int8, fmtMs, false],
    ["ONNX file size", q.size_bytes_fp32, q.size_bytes_int8, fmtBytes, false],
  ];
  const note = `${q.calibration} calibration on ${q.calibration_images} training images` + (q.calibration !== q.calibration_asked ? ` (asked ${q.calibration_asked}; ${q.tries.length} tried)` : "");
  return el(
    "div",
    { class: "int8-box" },
    el("h3", {}, "INT8 (model.int8.onnx)"),
    el(
      "table",
      { class: "before-after", id: "int8" },
      el("thead", {}, el("tr", {}, ["", "FP32", "INT8", "change"].map((h) => el("th", { scope: "col" }, h)))),
      el(
        "tbody",
        {},
        rows.map(([label, b, a, fmt, isScore]) =>
          el("tr", {}, el("th", { scope: "row" }, label), el("td", { class: "num" }, fmt(b ?? null)), el("td", { class: "num" }, fmt(a ?? null)), el("td", { class: "num" }, change(b, a, isScore))),
        ),
      ),
    ),
    el("p", { class: "muted small" }, note),
    q.warning ? el("p", { class: "field-error", role: "alert" }, q.warning) : null,
  );
}

function artifactsTable(artifacts, jobBase) {
  const status = el("p", { class: "muted small", role: "status" });
  const fetchOne = async (a) => {
    status.textContent = `Downloading ${a.name}…`;
    try {
      await download(sameOrigin(a.url) || `${jobBase}/artifacts/${encodeURIComponent(a.name)}`, a.name.split("/").pop());
      status.textContent = `Downloaded ${a.name}.`;
    } catch (err) {
      status.textContent = err.message;
    }
  };
  const row = (a) =>
    el(
      "tr",
      {},
      el("td", {}, el("button", { type: "button", class: "link", "data-artifact": a.name, onclick: () => fetchOne(a) }, `⤓ ${a.name}`)),
      el("td", { class: "num" }, fmtBytes(a.size)),
      el("td", {}, a.sha256 ? el("code", { class: "sha", title: a.sha256 }, `${a.sha256.slice(0, 12)}…`) : "—"),
    );
  return el(
    "div",
    { class: "artifacts-box" },
    el("h3", {}, "Artifacts"),
    el(
      "table",
      { class: "artifacts", id: "artifacts" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "file"), el("th", { scope: "col", class: "num" }, "size"), el("th", { scope: "col" }, "sha256"))),
      el("tbody", {}, artifacts.map(row)),
    ),
    status,
  );
}

// The job's pictures, shown on the page: the unpruned and pruned networks' predictions on a few
// validation images (previews/*.png, when the task draws them) and the search's plots.
function picturesBox(artifacts, jobBase) {
  const urlOf = (a) => sameOrigin(a.url) || `${jobBase}/artifacts/${encodeURIComponent(a.name)}`;
  const picture = (a, alt) => {
    const img = el("img", { alt, "data-artifact": a.name, loading: "lazy" });
    objectUrl(urlOf(a)).then((src) => { img.src = src; }, () => { img.alt = `${alt} (could not be loaded)`; });
    return el("figure", {}, img, el("figcaption", { class: "muted small" }, a.name));
  };
  const previews = artifacts.filter((a) => a.name.startsWith("previews/") && a.name.endsWith(".png"));
  const plots = artifacts.filter((a) => a.name === "pareto.png" || a.name === "channels.png");
  if (!previews.length && !plots.length) return null;
  return el(
    "div",
    { class: "pictures-box", id: "pictures" },
    previews.length ? el("h3", {}, "Predictions before and after pruning (validation images)") : null,
    previews.length ? el("div", { class: "pictures" }, previews.map((a) => picture(a, `unpruned and pruned predictions, ${a.name}`))) : null,
    plots.length ? el("h3", {}, "Search") : null,
    plots.length ? el("div", { class: "pictures" }, plots.map((a) => picture(a, a.name === "pareto.png" ? "candidates: score against cost, Pareto front" : "channels kept per layer"))) : null,
  );
}

// Fills `container` with what is known; returns false when there is nothing to show yet.
export function renderResults(container, summary, artifacts, jobBase) {
  const parts = [];
  if (summary) parts.push(beforeAfterTable(summary, artifacts));
  if (summary && summary.quantize) parts.push(int8Table(summary.quantize));
  if (artifacts && artifacts.length) {
    const pictures = picturesBox(artifacts, jobBase);
    if (pictures) parts.push(pictures);
    parts.push(artifactsTable(artifacts, jobBase));
  }
  container.replaceChildren(...parts);
  return parts.length > 0;
}
