// The submit form: builds the JSON job spec of POST /v1/jobs and shows the API's own
// validation messages (422) next to the fields they name, so the form and the API never disagree.
// Models and data sets are uploaded from the form and picked from the team's uploads (uploads.js).

import { ApiError, get, loadChoices, post } from "../api.js";
import { el } from "../util.js";
import { UploadPicker } from "./uploads.js";

const FALLBACK = {
  models: ["convnet", "resnet18", "resnet20", "resnet56", "vgg16_bn", "mobilenetv2"],
  datasets: ["digits", "fashion-mnist", "cifar10", "imagefolder", "synthetic"],
  strategies: ["uniform", "sensitivity", "global", "eagleeye", "netadapt", "optuna", "amc", "metapruning", "autoslim"],
  criteria: ["l1", "l2"],
  evaluators: ["adaptive-bn", "plain", "finetune"],
  targets: ["flops", "params", "memory", "latency"],
  prune_schedules: ["one-shot", "iterative"],
  streams: ["search", "last", "whole"],
  runtimes: ["eager", "torchscript", "onnxruntime", "inductor"],
};

function field(label, id, input, help) {
  return el(
    "div",
    { class: "field", "data-field": id },
    el("label", { for: id }, label),
    input,
    help ? el("small", { class: "muted", id: `${id}-help` }, help) : null,
    el("small", { class: "field-error", id: `${id}-error`, role: "alert" }),
  );
}

// Which form field a 422's location (e.g. "target", "strategy.options", "data") belongs to.
const FIELD_OF = [
  [/^model\.upload/, "upload"],
  [/^model/, "zoo"],
  [/^data\.upload/, "data-upload"],
  [/^data\.path/, "data-path"],
  [/^data\.input_size/, "input-size"],
  [/^data/, "dataset"],
  [/^target/, "target-value"],
  [/^strategy\.options/, "options"],
  [/^strategy/, "strategy"],
  [/^criterion/, "criterion"],
  [/^evaluator/, "evaluator"],
  [/^finetune\.prune_schedule/, "prune-schedule"],
  [/^finetune\.rounds/, "rounds"],
  [/^finetune\.kd_alpha/, "kd-alpha"],
  [/^finetune/, "finetune-epochs"],
  [/^train/, "train-epochs"],
  [/^priority/, "priority"],
  [/^runtime/, "runtime"],
  [/^space\.streams/, "streams"],
  [/^task_output/, "task-output"],
  [/^task/, "task"],
];

function fieldFor(path, message) {
  for (const [re, id] of FIELD_OF) if (re.test(path)) return id;
  // String errors from the API name their field in the text ("data.path ... is outside ...").
  const m = /^((?:task_output|task|model|data|target|strategy|criterion|evaluator|finetune|train|priority|runtime|space)(?:\.\w+)*)\b/.exec(message || "");
  return m ? fieldFor(m[1], "") : null;
}

export function mountSubmit(root) {
  const zoo = el("select", { id: "zoo", name: "zoo" });
  const modelArgs = el("input", { id: "model-args", name: "model-args", type: "text", spellcheck: "false", placeholder: '{"num_classes": 10}' });
  const dataset = el("select", { id: "dataset", name: "dataset" });
  const dataPath = el("input", { id: "data-path", name: "data-path", type: "text", placeholder: "/data/cifar10" });
  const inputSize = el("input", { id: "input-size", name: "input-size", type: "number", min: "8", placeholder: "default" });
  const task = el("select", { id: "task", name: "task" });
  const taskOutput = el("input", { id: "task-output", name: "task-output", type: "text", placeholder: "first" });
  const targetKind = el("select", { id: "target-kind", name: "target-kind" });
  const targetValue = el("input", { id: "target-value", name: "target-value", type: "text", value: "0.5", required: true, inputmode: "decimal" });
  const absolute = el("input", { id: "absolute", name: "absolute", type: "checkbox" });
  const strategy = el("select", { id: "strategy", name: "strategy" });
  const options = el("textarea", { id: "options", name: "options", rows: "3", spellcheck: "false", placeholder: '{"trials": 20}' });
  const criterion = el("select", { id: "criterion", name: "criterion" });
  const evaluator = el("select", { id: "evaluator", name: "evaluator" });
  const runtime = el("select", { id: "runtime", name: "runtime" });
  const streams = el("select", { id: "streams", name: "streams" });
  const finetuneEpochs = el("input", { id: "finetune-epochs", name: "finetune-epochs", type: "number", min: "0", step: "any", placeholder: "API default" });
  const pruneSchedule = el("select", { id: "prune-schedule", name: "prune-schedule" });
  const rounds = el("input", { id: "rounds", name: "rounds", type: "number", min: "1", step: "1", placeholder: "API default" });
  const kdAlpha = el("input", { id: "kd-alpha", name: "kd-alpha", type: "number", min: "0", max: "1", step: "any", placeholder: "API default" });
  const trainEpochs = el("input", { id: "train-epochs", name: "train-epochs", type: "number", min: "0", step: "any", placeholder: "API default" });
  const priority = el("input", { id: "priority", name: "priority", type: "number", min: "-100", max: "100", value: "0" });
  const summary = el("div", { class: "error-box", id: "submit-error", role: "alert", tabindex: "-1", hidden: true });
  const submitBtn = el("button", { type: "submit", class: "primary", id: "submit" }, "Submit job");
  const submitNote = el("small", { class: "muted", id: "submit-note", role: "status" });

  // While a file uploads the job cannot be sent (it would not name the upload yet).
  let uploading = 0;
  let submitting = false;
  const syncSubmit = () => {
    submitBtn.disabled = uploading > 0 || submitting;
    submitBtn.textContent = submitting ? "Submitting…" : "Submit job";
    submitNote.textContent = uploading > 0 ? "Waiting for the upload to finish…" : "";
  };
  const onBusy = (busy) => {
    uploading += busy ? 1 : -1;
    syncSubmit();
  };
  const models = new UploadPicker("models", {
    id: "upload",
    label: "Uploaded model",
    fileLabel: "Upload a model",
    help: "a torch.export program, or weights for the zoo model above with the arguments below",
    // A weights file is checked against the zoo model it was trained as; a program carries its own.
    extraFields: (file) => (file.name.toLowerCase().endsWith(".pt2") ? {} : { zoo: zoo.value, args: modelArgs.value.trim() || "{}" }),
    onBusy,
  });
  const datasets = new UploadPicker("datasets", {
    id: "data-upload",
    label: "Uploaded data set",
    fileLabel: "Upload a data set",
    help: "an image folder archive: <class>/* or train/<class>/* (+ val/<class>/*)",
    onBusy,
    // An uploaded data set replaces the built-in one and its path.
    onPick: (it) => {
      dataset.disabled = dataPath.disabled = it !== null;
    },
  });

  const form = el(
    "form",
    { class: "card form", id: "submit-form", novalidate: true },
    el("h1", {}, "New compression job"),
    el("p", { class: "muted" }, "Fields left at their defaults use the API's documented defaults. Messages below come from the API's own validation."),
    summary,
    el(
      "fieldset",
      {},
      el("legend", {}, "Model and data"),
      field("Task", "task", task, "what the network does; the score follows it"),
      field("Zoo model", "zoo", zoo, "trained on the data first unless you pick an uploaded model below"),
      field("Zoo model arguments (JSON)", "model-args", modelArgs, "only for uploading weights: the arguments they were trained with"),
      field("Data set", "dataset", dataset, "built in; an uploaded data set below replaces it"),
      field("Data path", "data-path", dataPath, "only for cifar10 / imagefolder, under the allowed roots"),
      field("Input size (px)", "input-size", inputSize),
      field("Task output", "task-output", taskOutput, "for a network with several outputs: the name (or position) of the one the task reads"),
    ),
    el("fieldset", { class: "uploads" }, el("legend", {}, "Your uploads"), models.node, datasets.node),
    el(
      "fieldset",
      {},
      el("legend", {}, "Target and search"),
      field("Target resource", "target-kind", targetKind),
      field("Target value", "target-value", targetValue, "a ratio of the original in (0, 1], e.g. 0.5; or tick absolute: 120k, 2MB, 3ms"),
      el("div", { class: "field check" }, absolute, el("label", { for: "absolute" }, "absolute value (not a ratio)")),
      field("Strategy", "strategy", strategy),
      field("Strategy options (JSON)", "options", options),
      field("Criterion", "criterion", criterion),
      field("Evaluator", "evaluator", evaluator),
      field("Residual streams", "streams", streams, "search: cut like any layer; last: kept whole unless the target needs them cut, then cut least; whole: never cut"),
      field("Deployment runtime", "runtime", runtime, "latency (a latency target's table, the report) is measured in it; inductor cannot hold a latency target"),
    ),
    el(
      "fieldset",
      {},
      el("legend", {}, "Training"),
      field("Fine-tune epochs", "finetune-epochs", finetuneEpochs, "blank keeps the API's fine-tune length (until no gain, within its step budget)"),
      field("Pruning schedule", "prune-schedule", pruneSchedule, "one-shot: cut once, then fine-tune; iterative: reach the widths in several cuts, each followed by its share of the same fine-tune"),
      field("Rounds (iterative)", "rounds", rounds, "cuts of the iterative schedule"),
      field("Distillation weight", "kd-alpha", kdAlpha, "0..1; above 0 the fine-tune distils from the unpruned network"),
      field("Pre-train epochs (zoo model)", "train-epochs", trainEpochs, "blank keeps the API's training defaults"),
      field("Priority", "priority", priority, "higher runs first; above 0 needs an admin token"),
    ),
    el("div", { class: "actions" }, submitBtn, el("a", { href: "#/jobs", class: "button" }, "Back to jobs"), submitNote),
  );
  root.append(form);

  function fill(choices) {
    // `withDefault`: a first "API default" choice that leaves the field out of the spec.
    const set = (s, values, value, withDefault = false) => {
      const opts = values.map((v) => el("option", { value: v }, v));
      if (withDefault) opts.unshift(el("option", { value: "" }, "API default"));
      const current = s.value;
      s.replaceChildren(...opts);
      const keep = current && values.includes(current) ? current : value;
      s.value = keep && values.includes(keep) ? keep : withDefault ? "" : values[0];
    };
    set(zoo, choices.models, "convnet");
    set(dataset, choices.datasets, "digits");
    set(targetKind, choices.targets, "flops");
    set(strategy, choices.strategies, "uniform");
    set(criterion, choices.criteria, "", true);
    set(evaluator, choices.evaluators, "", true);
    set(pruneSchedule, choices.prune_schedules, "", true);
    set(runtime, choices.runtimes, "", true);
    set(streams, choices.streams, "", true);
    // The tasks come from the server's registry only; without that list the field stays hidden.
    const tasks = Array.isArray(choices.tasks) ? choices.tasks : [];
    set(task, tasks, "", true);
    task.closest(".field").hidden = tasks.length === 0;
    if (choices.uploads) {
      models.setRules(choices.uploads.models);
      datasets.setRules(choices.uploads.datasets);
    }
  }
  fill(FALLBACK);
  models.refresh();
  datasets.refresh();
  // Choices from the API itself (/v1/zoo, /v1/strategies, /v1/evaluators) and, for what /v1
  // does not list, from the dashboard's own registry read-out.
  Promise.all([get("/v1/zoo").catch(() => null), get("/v1/strategies").catch(() => null), get("/v1/evaluators").catch(() => null), loadChoices().catch(() => null)]).then(
    ([models, strategies, evaluators, local]) => {
      fill({ ...FALLBACK, ...(local || {}), ...(models ? { models } : {}), ...(strategies ? { strategies: strategies.map((s) => s.name) } : {}), ...(evaluators ? { evaluators: evaluators.map((e) => e.name) } : {}) });
    },
  );

  function clearErrors() {
    summary.hidden = true;
    for (const n of form.querySelectorAll(".field-error")) n.textContent = "";
    for (const n of form.querySelectorAll("[aria-invalid]")) n.removeAttribute("aria-invalid");
  }

  function showErrors(message, fields) {
    summary.replaceChildren(el("strong", {}, "The job was not accepted: "), message);
    summary.hidden = false;
    const list = fields.length ? fields : [{ field: "", message }];
    let first = null;
    for (const f of list) {
      const id = fieldFor(f.field, f.message);
      if (!id) continue;
      const box = form.querySelector(`#${id}-error`);
      const input = form.querySelector(`#${id}`);
      if (box) box.textContent = box.textContent ? `${box.textContent}; ${f.message}` : f.message;
      if (input) {
        input.setAttribute("aria-invalid", "true");
        first = first || input;
      }
    }
    (first || summary).focus();
  }

  function targetOf() {
    const kind = targetKind.value;
    const raw = targetValue.value.trim();
    const num = Number(raw);
    const numeric = raw !== "" && Number.isFinite(num);
    if (absolute.checked) return numeric ? { kind, value: num, absolute: true } : `${kind}=${raw}`;
    return { [kind]: numeric ? num : raw };
  }

  function specOf() {
    let opts = {};
    if (options.value.trim()) {
      try {
        opts = JSON.parse(options.value);
      } catch (err) {
        throw new ApiError(0, `strategy.options: not valid JSON (${err.message})`, [{ field: "strategy.options", message: "not valid JSON" }]);
      }
    }
    const spec = {
      model: models.value() !== null ? { upload: models.value() } : { zoo: zoo.value },
      data: datasets.value() !== null ? { upload: datasets.value() } : { name: dataset.value },
      target: targetOf(),
      strategy: { name: strategy.value, options: opts },
      priority: Number(priority.value || 0),
    };
    if (criterion.value) spec.criterion = criterion.value;
    if (evaluator.value) spec.evaluator = { name: evaluator.value };
    if (runtime.value) spec.runtime = runtime.value;
    if (task.value) spec.task = task.value;
    const out = taskOutput.value.trim();
    if (out) spec.task_output = /^\d+$/.test(out) ? Number(out) : out;
    if (streams.value) spec.space = { streams: streams.value };
    if (datasets.value() === null && dataPath.value.trim()) spec.data.path = dataPath.value.trim();
    if (inputSize.value) spec.data.input_size = Number(inputSize.value);
    const finetune = {};
    if (finetuneEpochs.value !== "") finetune.epochs = Number(finetuneEpochs.value);
    if (pruneSchedule.value) finetune.prune_schedule = pruneSchedule.value;
    if (rounds.value !== "") finetune.rounds = Number(rounds.value);
    if (kdAlpha.value !== "") finetune.kd_alpha = Number(kdAlpha.value);
    if (Object.keys(finetune).length) spec.finetune = finetune;
    if (trainEpochs.value !== "") spec.train = { epochs: Number(trainEpochs.value) };
    return spec;
  }

  form.addEventListener("submit", async (evt) => {
    evt.preventDefault();
    if (uploading > 0) return;
    clearErrors();
    submitting = true;
    syncSubmit();
    try {
      const job = await post("/v1/jobs", specOf());
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      if (err.status !== 401) showErrors(err.message, err.fields || []);
    } finally {
      submitting = false;
      syncSubmit();
    }
  });
  zoo.focus();
  return () => {
    models.destroy();
    datasets.destroy();
  };
}
