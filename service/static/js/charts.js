// Chart.js wrappers for the job page. Chart.js (bundled under /static/vendor) is a global
// from its UMD build. Animations and parsing are off so thousands of points redraw quickly.

const Chart = window.Chart;
const PALETTE = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626", "#4b5563", "#ca8a04"];

Chart.defaults.animation = false;
Chart.defaults.font.family = getComputedStyle(document.documentElement).getPropertyValue("--font").trim() || "system-ui, sans-serif";
Chart.defaults.color = "#374151";
Chart.defaults.maintainAspectRatio = false;

export const colour = (i) => PALETTE[i % PALETTE.length];

// Draws a dashed vertical line at `options.plugins.targetLine.value` (the job's budget).
const targetLinePlugin = {
  id: "targetLine",
  afterDatasetsDraw(chart, _args, opts) {
    if (opts.value === null || opts.value === undefined) return;
    const { ctx, chartArea, scales } = chart;
    const x = scales.x.getPixelForValue(opts.value);
    if (x < chartArea.left || x > chartArea.right) return;
    ctx.save();
    ctx.strokeStyle = "#dc2626";
    ctx.lineWidth = 1.5;
    ctx.setLineDash([6, 4]);
    ctx.beginPath();
    ctx.moveTo(x, chartArea.top);
    ctx.lineTo(x, chartArea.bottom);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#dc2626";
    ctx.font = "12px " + Chart.defaults.font.family;
    const label = opts.label || "target";
    // Left of the line when the label would run past the plot's right edge.
    ctx.textAlign = x + 4 + ctx.measureText(label).width > chartArea.right ? "right" : "left";
    ctx.fillText(label, x + (ctx.textAlign === "left" ? 4 : -4), chartArea.top + 12);
    ctx.restore();
  },
};

function fmtAxis(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toFixed(3)}`;
}

// Resource-vs-score scatter: every candidate, the Pareto front, the chosen policy and the
// target. `describe(point)` gives tooltip lines; `onInspect(point)` fires on hover.
export function scatterChart(canvas, { xLabel, yLabel, describe, onInspect }) {
  return new Chart(canvas, {
    type: "scatter",
    data: {
      datasets: [
        { label: "candidates", data: [], parsing: false, normalized: true, pointRadius: 2.5, pointHoverRadius: 5, backgroundColor: "rgba(37,99,235,0.45)", borderWidth: 0, order: 3 },
        { label: "Pareto front", data: [], parsing: false, showLine: true, borderColor: "#d97706", backgroundColor: "#d97706", pointRadius: 3.5, borderWidth: 2, stepped: "before", order: 2 },
        { label: "chosen policy", data: [], parsing: false, pointStyle: "star", pointRadius: 11, pointHoverRadius: 13, borderColor: "#059669", backgroundColor: "#059669", borderWidth: 2.5, order: 1 },
      ],
    },
    options: {
      responsive: true,
      interaction: { mode: "nearest", intersect: true },
      scales: {
        x: { type: "linear", title: { display: true, text: xLabel }, ticks: { callback: fmtAxis } },
        y: { type: "linear", title: { display: true, text: yLabel } },
      },
      plugins: {
        targetLine: { value: null },
        legend: { position: "bottom", labels: { usePointStyle: true } },
        tooltip: { callbacks: { label: (ctx) => describe(ctx.raw) } },
      },
      onHover: (_evt, elements, chart) => {
        if (!elements.length) return;
        const { datasetIndex, index } = elements[0];
        onInspect(chart.data.datasets[datasetIndex].data[index]);
      },
    },
    plugins: [targetLinePlugin],
  });
}

// Grouped bars of channels per layer: the original width behind, what the policy keeps in front.
export function policyChart(canvas) {
  return new Chart(canvas, {
    type: "bar",
    data: {
      labels: [],
      datasets: [
        { label: "original", data: [], backgroundColor: "#d1d5db", grouped: false, order: 2, barPercentage: 0.9 },
        { label: "kept", data: [], backgroundColor: "#2563eb", grouped: false, order: 1, barPercentage: 0.6 },
      ],
    },
    options: {
      responsive: true,
      scales: { x: { ticks: { autoSkip: false, maxRotation: 60, minRotation: 0 } }, y: { beginAtZero: true, title: { display: true, text: "channels" } } },
      plugins: { legend: { position: "bottom" } },
    },
  });
}

// One line per series: {label, points: [{x, y}]}; used for AMC rewards and sensitivity curves.
export function lineChart(canvas, { xLabel, yLabel }) {
  return new Chart(canvas, {
    type: "line",
    data: { datasets: [] },
    options: {
      responsive: true,
      parsing: false,
      interaction: { mode: "nearest", intersect: false },
      scales: { x: { type: "linear", title: { display: true, text: xLabel } }, y: { title: { display: true, text: yLabel } } },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    },
  });
}

export function setLines(chart, series) {
  chart.data.datasets = series.map((s, i) => ({
    label: s.label,
    data: s.points,
    borderColor: colour(i),
    backgroundColor: colour(i),
    pointRadius: s.points.length > 200 ? 0 : 2.5,
    borderWidth: 1.8,
    tension: 0,
  }));
  chart.update("none");
}
