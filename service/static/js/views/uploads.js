// The submit form's pickers for the team's uploads: a select listing the uploaded models (or data
// sets) with name, size, classes and date, and a file picker that uploads to the API with a
// progress bar. The upload that lands is selected; a refusal shows the API's one line.

import { get, upload } from "../api.js";
import { el, fmtBytes, fmtDate, plural } from "../util.js";

// A model's number of classes: the channels of a program's first output when it is one score per
// class (K) or per pixel (K×H×W), or the weights' `num_classes` argument; null otherwise (a
// detector's (4+K)×A says no class count by itself).
function classesOfModel(m) {
  const args = m.args || {};
  const shape = args.output_shape;
  if (Array.isArray(shape)) return shape.length === 1 || shape.length === 3 ? shape[0] : null;
  return Number.isInteger(args.num_classes) ? args.num_classes : null;
}

// A program's outputs by name with their shapes ("out 4×32×32, aux 4×32×32"), when it has several.
function outputsOfModel(m) {
  const outputs = Object.entries((m.args || {}).outputs || {});
  if (outputs.length < 2) return null;
  return `outputs ${outputs.map(([name, shape]) => `${name} ${shape.join("×")}`).join(", ")}`;
}

const imageCount = (d) => Object.values(d.images || {}).reduce((a, b) => a + Number(b || 0), 0);

// How each upload endpoint's items are listed (one line in the select) and described (below it).
export const UPLOAD_KINDS = {
  models: {
    path: "/v1/models",
    none: "none: the zoo model above",
    line(m) {
      const classes = classesOfModel(m);
      const what = m.kind === "program" ? ".pt2 program" : `${m.zoo} weights`;
      return [`#${m.id} ${m.filename}`, what, classes !== null ? plural(classes, "class", "classes") : null, fmtBytes(m.size), fmtDate(m.created_at)].filter(Boolean).join(" · ");
    },
    detail(m) {
      const a = m.args || {};
      const shape = Array.isArray(a.input_shape) ? `input ${a.input_shape.join("×")}` : null;
      const output = Array.isArray(a.output_shape) && classesOfModel(m) === null ? `output ${a.output_shape.join("×")}` : null;
      const converted = a.layers && typeof a.layers === "object" ? Object.keys(a.layers).length : null; // name -> kind
      const layers = converted ? plural(converted, "prunable layer") : null;
      const args = m.kind === "weights" && Object.keys(a).length ? `arguments ${JSON.stringify(a)}` : null;
      return [shape, outputsOfModel(m) || output, layers, args, `sha256 ${m.sha256.slice(0, 12)}…`].filter(Boolean).join(" · ");
    },
  },
  datasets: {
    path: "/v1/datasets",
    none: "none: the data set above",
    line(d) {
      return [`#${d.id} ${d.filename}`, plural(d.num_classes, "class", "classes"), plural(imageCount(d), "image"), fmtBytes(d.size), fmtDate(d.created_at)].join(" · ");
    },
    detail(d) {
      const split = Object.entries(d.images || {}).map(([k, n]) => `${k} ${n}`).join(", ");
      const names = d.classes.length > 12 ? `${d.classes.slice(0, 12).join(", ")}, …` : d.classes.join(", ");
      return [`classes: ${names}`, `${d.in_channels} channel(s)`, `images: ${split}`, `layout ${d.layout}`].join(" · ");
    },
  },
};

// "1,073,741,824 bytes" as "1.00 GiB"-style text for help lines.
function fmtLimit(bytes) {
  if (!bytes) return "";
  if (bytes >= 1 << 30) return `${+(bytes / (1 << 30)).toFixed(2)} GiB`;
  return fmtBytes(bytes);
}

// One picker: `id` names the select (its 422s at submit land in `${id}-error`), `${id}-file` the
// file input. `extraFields(file)` adds form fields to an upload (a weights file's zoo name);
// `onBusy(busy)` fires when an upload starts and ends; `onPick(item)` when the selection changes.
export class UploadPicker {
  constructor(kind, { id, label, fileLabel, help, extraFields, onBusy, onPick }) {
    this.kind = UPLOAD_KINDS[kind];
    this.id = id;
    this.items = [];
    this.extraFields = extraFields || (() => ({}));
    this.onBusy = onBusy || (() => {});
    this.onPick = onPick || (() => {});
    this.controller = null;
    this.help = help;
    this.maxBytes = null;

    this.select = el("select", { id, name: id, "aria-describedby": `${id}-detail` }, el("option", { value: "" }, this.kind.none));
    this.detail = el("small", { class: "muted", id: `${id}-detail`, "aria-live": "polite" });
    this.file = el("input", { id: `${id}-file`, name: `${id}-file`, type: "file", "aria-describedby": `${id}-file-help` });
    this.button = el("button", { type: "button", id: `${id}-send`, disabled: true }, "Upload");
    this.progress = el("progress", { id: `${id}-progress`, max: "100", value: "0", "aria-label": `${label}: upload progress`, hidden: true });
    this.status = el("small", { class: "muted", id: `${id}-status`, role: "status" });
    this.error = el("small", { class: "field-error", id: `${id}-file-error`, role: "alert" });
    this.helpLine = el("small", { class: "muted", id: `${id}-file-help` }, help);

    this.node = el(
      "div",
      { class: "upload-box", "data-field": id },
      el("div", { class: "field" }, el("label", { for: id }, label), this.select, this.detail, el("small", { class: "field-error", id: `${id}-error`, role: "alert" })),
      el(
        "div",
        { class: "field" },
        el("label", { for: `${id}-file` }, fileLabel),
        el("div", { class: "upload-row" }, this.file, this.button),
        this.helpLine,
        el("div", { class: "upload-row" }, this.progress, this.status),
        this.error,
      ),
    );
    this.select.addEventListener("change", () => this.picked());
    this.file.addEventListener("change", () => {
      this.button.disabled = !this.file.files.length || this.controller !== null;
      this.clearError();
    });
    this.button.addEventListener("click", () => this.send());
  }

  // What the endpoint takes, as served in the dashboard's choices: {suffixes, max_bytes}.
  setRules(rules) {
    const suffixes = (rules && rules.suffixes) || [];
    this.maxBytes = (rules && rules.max_bytes) || null;
    if (suffixes.length) this.file.setAttribute("accept", suffixes.join(","));
    const limit = this.maxBytes ? `, up to ${fmtLimit(this.maxBytes)}` : "";
    this.helpLine.textContent = suffixes.length ? `${this.help} (${suffixes.join(", ")}${limit})` : this.help;
  }

  value() {
    return this.select.value ? Number(this.select.value) : null;
  }

  item() {
    return this.items.find((x) => String(x.id) === this.select.value) || null;
  }

  picked() {
    const it = this.item();
    this.detail.textContent = it ? this.kind.detail(it) : "";
    this.onPick(it);
  }

  clearError() {
    this.error.textContent = "";
    this.file.removeAttribute("aria-invalid");
  }

  // The team's uploads, newest first; `selectId` is picked if given, else the current choice kept.
  async refresh(selectId = null) {
    let items;
    try {
      items = await get(this.kind.path);
    } catch (err) {
      if (err.status !== 401) this.detail.textContent = `Could not list the uploads: ${err.message}`;
      return;
    }
    this.items = [...items].sort((a, b) => b.id - a.id);
    const keep = selectId !== null ? String(selectId) : this.select.value;
    this.select.replaceChildren(el("option", { value: "" }, this.kind.none), ...this.items.map((it) => el("option", { value: String(it.id) }, this.kind.line(it))));
    this.select.value = this.items.some((it) => String(it.id) === keep) ? keep : "";
    this.picked();
  }

  async send() {
    const file = this.file.files[0];
    if (!file || this.controller) return;
    this.clearError();
    const form = new FormData();
    for (const [k, v] of Object.entries(this.extraFields(file))) form.append(k, v);
    form.append("file", file, file.name);
    this.controller = new AbortController();
    this.button.disabled = this.file.disabled = true;
    this.progress.hidden = false;
    this.progress.value = 0;
    this.status.textContent = `Uploading ${file.name}… 0 %`;
    this.onBusy(true);
    try {
      const made = await upload(this.kind.path, form, {
        signal: this.controller.signal,
        onProgress: (f) => {
          this.progress.value = Math.round(f * 100);
          this.status.textContent = f < 1 ? `Uploading ${file.name}… ${Math.round(f * 100)} %` : `Checking ${file.name} on the server…`;
        },
      });
      this.file.value = "";
      await this.refresh(made.id);
      this.status.textContent = `Uploaded ${file.name} as #${made.id}; it is selected.`;
    } catch (err) {
      this.status.textContent = "";
      if (err.status !== 401) {
        const hint = err.status === 0 && this.maxBytes && file.size > this.maxBytes ? ` (the server takes files up to ${fmtLimit(this.maxBytes)})` : "";
        this.error.textContent = `${file.name} was not accepted: ${err.message}${hint}`;
        this.file.setAttribute("aria-invalid", "true");
      }
    } finally {
      this.controller = null;
      this.progress.hidden = true;
      this.file.disabled = false;
      this.button.disabled = !this.file.files.length;
      this.onBusy(false);
    }
  }

  destroy() {
    if (this.controller) this.controller.abort();
  }
}
