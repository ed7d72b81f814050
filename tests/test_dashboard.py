"""The dashboard in a real browser: headless Chromium from Debian's `chromium` package, driven by
Playwright, against the real server (`secateurs serve` in a subprocess, temp data dir, a team
token from `secateurs token create`, real jobs on digits/convnet), plus a render-time measurement
with 5,000 candidates served by a small stand-in API (the only part not against the real server).

Set SECATEURS_SCREENSHOT_DIR to also write the job page screenshots there (the README's
docs/dashboard-*.png come from `SECATEURS_SCREENSHOT_DIR=docs pytest tests/test_dashboard.py`)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from service.devserver import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a real server with local Ray, and a browser
VIEWPORT = {"width": 1400, "height": 900}


@dataclass
class Server:
    url: str
    token: str
    http: httpx.Client

    def job(self, job_id: int) -> dict:
        return self.http.get(f"/v1/jobs/{job_id}").json()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """`secateurs serve` on a random port with its own SQLite file, data dir and local Ray."""
    data = tmp_path_factory.mktemp("secateurs-data")
    env = {
        **os.environ,
        "SECATEURS_DATA_DIR": str(data),
        "SECATEURS_EVAL_WORKERS": "1",
        "SECATEURS_RAY_NUM_CPUS": "2",
        "SECATEURS_MAX_CONCURRENT_JOBS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("SECATEURS_DATABASE_URL", None)
    cli = [sys.executable, "-m", "secateurs"]  # what the console script runs (`secateurs:main`)
    made = subprocess.run(
        [*cli, "token", "create", "--team", "vision"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    token = made.stdout.strip().splitlines()[-1]
    port = free_port()
    with open(data / "server.log", "w") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*cli, "serve", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {(data / 'server.log').read_text()[-2000:]}")
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not come up in 120 s")
            time.sleep(0.5)
        yield Server(url, token, http)
    finally:
        http.close()
        proc.send_signal(signal.SIGINT)  # uvicorn's clean shutdown also stops the local Ray
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh tab (own session storage); page errors fail the test."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _sign_in(page, base: str, token: str) -> None:
    page.goto(base + "/")
    page.fill("#token", token)
    page.click("form button[type=submit]")
    page.wait_for_selector("#jobs-table")


def _shot(page, tmp_path: Path, name: str, height: int = VIEWPORT["height"]) -> Path:
    """A screenshot of the top `height` pixels of the page into the test's temp dir (and
    SECATEURS_SCREENSHOT_DIR if set)."""
    out = tmp_path / f"dashboard-{name}.png"
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(out), full_page=True, clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height})
    assert out.stat().st_size > 10_000
    extra = os.environ.get("SECATEURS_SCREENSHOT_DIR")
    if extra:
        shutil.copy(out, Path(extra) / out.name)
    return out


def _points(page) -> int:
    return page.evaluate("() => (window.__secateurs && window.__secateurs.points) || 0")


def test_watch_a_job_from_running_to_done_and_download_its_model(server, page, tmp_path):
    spec = {
        "model": {"zoo": "convnet"},
        "data": {"name": "digits"},
        "target": {"flops": 0.5},
        "strategy": {"name": "sensitivity", "options": {"rates": [r / 10 for r in range(1, 10)]}},
        "train": {"epochs": 1},
        "finetune": {"epochs": 1},
    }
    job_id = server.http.post("/v1/jobs", json=spec).json()["id"]

    _sign_in(page, server.url, server.token)
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    row.wait_for(timeout=15_000)
    assert "sensitivity" in row.inner_text()
    assert "convnet" in row.inner_text()
    row.locator("a").click()
    page.wait_for_selector("#job-title")
    assert page.inner_text("#job-title") == f"Job {job_id}"

    # Candidate points grow while the job runs.
    seen_running: list[int] = []
    shot_running = None
    deadline = time.monotonic() + 600  # a guard against a hang; a loaded machine takes minutes
    while time.monotonic() < deadline:
        status = page.inner_text("#job-status")
        n = _points(page)
        if status == "running" and n > 0:
            seen_running.append(n)
            if shot_running is None and n >= 12:
                shot_running = _shot(page, tmp_path, "running")
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.25)
    assert page.inner_text("#job-status") == "succeeded", server.job(job_id).get("error")
    assert len(set(seen_running)) >= 2, f"saw candidate counts {sorted(set(seen_running))} while running"
    assert shot_running is not None

    # Finished: every stored candidate is drawn, the before/after table and artifacts show.
    page.wait_for_selector("#before-after")
    stored = server.http.get(f"/v1/jobs/{job_id}/candidates", params={"limit": 5000}).json()
    page.wait_for_function(f"() => window.__secateurs.points === {len(stored)}", timeout=10_000)
    summary = server.job(job_id)["summary"]
    table = page.inner_text("#before-after")
    assert f"{summary['accuracy_after'] * 100:.2f} %" in table
    assert page.locator("#sens-card").is_visible()  # sensitivity curves for a sensitivity job
    # the search's plots are shown, fetched from the real API with the token
    page.wait_for_function(
        "() => [...document.querySelectorAll('#pictures img')].filter((i) => i.complete && i.naturalWidth > 0)"
        ".map((i) => i.dataset.artifact).sort().join() === 'channels.png,pareto.png'"
    )
    assert page.inner_text("#job-phase").startswith("Done")

    # Hover a candidate: its per-layer rates appear in the Inspect panel; keyboard does the same.
    page.focus("#scatter")
    page.keyboard.press("Home")
    inspect = page.inner_text("#inspect")
    assert "selected" in inspect
    assert re.search(r"\d+/\d+", inspect)

    # Download the pruned weights through the page; they match the API's checksum.
    artifacts = {a["name"]: a for a in server.http.get(f"/v1/jobs/{job_id}/artifacts").json()}
    with page.expect_download() as info:
        page.click('button[data-artifact="model.safetensors"]')
    saved = tmp_path / "model.safetensors"
    info.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == artifacts["model.safetensors"]["sha256"]
    _shot(page, tmp_path, "done", height=1300)


def test_submit_form_shows_api_errors_and_cancel_stops_a_job(server, page):
    # A wrong token sends the user back to token entry with a message.
    page.goto(server.url + "/#/submit")
    page.fill("#token", "sct_not-a-real-token")
    page.click("form button[type=submit]")
    page.wait_for_selector("#token-status.error")
    assert "401" in page.inner_text("#token-status")
    page.fill("#token", server.token)
    page.click("form button[type=submit]")
    page.wait_for_selector("#submit-form")  # back where the user was going

    # A ratio above 1: the API's own message, next to the target field.
    page.select_option("#strategy", "sensitivity")
    page.fill("#target-value", "1.5")
    page.click("#submit")
    page.wait_for_selector("#submit-error:not([hidden])")
    assert "ratio must be in (0, 1]" in page.inner_text("#submit-error")
    assert "1.5" in page.inner_text("#target-value-error")
    assert page.get_attribute("#target-value", "aria-invalid") == "true"

    # A valid, long job through the form; cancel it from its page once it is searching.
    page.fill("#target-value", "0.5")
    page.fill("#options", '{"rates": [' + ", ".join(f"{r / 100:.2f}" for r in range(1, 100)) + "]}")
    page.fill("#train-epochs", "1")
    page.click("#submit")
    page.wait_for_url(re.compile(r"#/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    page.wait_for_function("() => (window.__secateurs.points || 0) > 0", timeout=180_000)
    assert page.inner_text("#job-status") == "running"
    page.click("#cancel")
    page.click("#cancel-confirm")
    page.wait_for_function("() => document.querySelector('#job-status').innerText === 'cancelled'", timeout=60_000)
    job = server.job(job_id)
    assert job["status"] == "cancelled"
    assert job["candidates_evaluated"] < 3 * 99 + 2  # stopped before the analysis finished
    assert page.locator("#cancel").is_hidden()

    # The list's status filter shows the cancelled job and only cancelled jobs.
    page.click("nav a[data-nav=jobs]")
    page.select_option("#status-filter", "cancelled")
    page.wait_for_function(
        f"() => !!document.querySelector('tr[data-job-id=\"{job_id}\"]')"
        " && [...document.querySelectorAll('#jobs-table tbody tr')]"
        ".every((r) => r.innerText.includes('cancelled'))",
        timeout=10_000,
    )


def _digits_archive(path: Path, classes: int = 3, per_class: int = 12) -> Path:
    """A small image folder archive (`digit<c>/<i>.png`, 16x16 grey digits) as a .tar.gz."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    with tarfile.open(path, "w:gz") as tar:
        for c in range(classes):
            for i, img in enumerate(d.images[d.target == c][:per_class]):
                pixels = np.kron((img * 16).clip(0, 255).astype(np.uint8), np.ones((2, 2), dtype=np.uint8))
                buf = io.BytesIO()
                Image.fromarray(pixels, "L").save(buf, format="PNG")
                info = tarfile.TarInfo(f"digit{c}/{i:03d}.png")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
    return path


# Records what the page shows while an upload runs: every value the progress bar takes, whether
# the bar was shown and whether the submit button was disabled while it was.
WATCH_UPLOAD = """(id) => {
  const seen = (window.__upload = { values: [], shown: false, submitDisabled: false });
  const bar = document.querySelector(`#${id}-progress`);
  new MutationObserver(() => {
    if (!bar.hidden) {
      seen.shown = true;
      seen.values.push(Number(bar.value));
      seen.submitDisabled = seen.submitDisabled || document.querySelector("#submit").disabled;
    }
  }).observe(bar, { attributes: true, attributeFilter: ["value", "hidden"] });
}"""


UNTHROTTLED = {"offline": False, "latency": 0, "downloadThroughput": -1}


def _uploaded(page, picker: str) -> None:
    page.wait_for_function(
        "(id) => document.querySelector(`#${id}-status`).innerText.startsWith('Uploaded')", arg=picker, timeout=60_000
    )


def test_upload_a_program_and_an_archive_from_the_form_and_run_a_job_on_them(server, page, tmp_path):
    from pruning.export import export_program
    from pruning.models import build_model

    torch_net = build_model("convnet", num_classes=3, in_channels=1, input_size=16).eval()
    program = export_program(torch_net, tmp_path / "tiny_convnet.pt2", (1, 16, 16))
    data = _digits_archive(tmp_path / "three_digits.tar.gz")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an archive\n")

    _sign_in(page, server.url, server.token)
    page.goto(server.url + "/#/submit")
    page.wait_for_selector("#upload-file[accept]", state="attached")  # the served upload rules
    assert ".pt2" in page.get_attribute("#upload-file", "accept")
    from pruning.tasks import list_tasks

    page.wait_for_selector("#task option[value=distillation]", state="attached")
    assert page.locator("#task option").all_inner_texts() == ["API default", *list_tasks()]  # the server's registry

    # Slow the upload so its progress shows in steps; the submit button waits for it.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {**UNTHROTTLED, "uploadThroughput": 800_000})
    page.evaluate(WATCH_UPLOAD, "upload")
    page.set_input_files("#upload-file", str(program))
    page.click("#upload-send")
    _uploaded(page, "upload")
    cdp.send("Network.emulateNetworkConditions", {**UNTHROTTLED, "uploadThroughput": -1})
    seen = page.evaluate("() => window.__upload")
    assert seen["shown"], seen
    assert seen["submitDisabled"], seen
    assert any(0 < v < 100 for v in seen["values"]), seen["values"]  # it moved in steps
    assert max(seen["values"]) == 100, seen["values"]
    assert not page.locator("#submit").is_disabled()
    model = max(server.http.get("/v1/models").json(), key=lambda m: m["id"])
    assert model["filename"] == "tiny_convnet.pt2"
    assert page.input_value("#upload") == str(model["id"])  # the upload is selected
    option = page.inner_text(f'#upload option[value="{model["id"]}"]')
    for word in ("tiny_convnet.pt2", "3 classes", "KiB", str(model["created_at"])[:4]):
        assert word in option, option

    page.set_input_files("#data-upload-file", str(data))
    page.click("#data-upload-send")
    _uploaded(page, "data-upload")
    dataset = max(server.http.get("/v1/datasets").json(), key=lambda d: d["id"])
    assert dataset["filename"] == "three_digits.tar.gz"
    assert page.input_value("#data-upload") == str(dataset["id"])
    assert page.locator("#dataset").is_disabled()  # the upload replaces the built-in data set
    assert "digit0, digit1, digit2" in page.inner_text("#data-upload-detail")

    # A file that is not an archive: the API's one line, next to the file, and nothing stored.
    page.set_input_files("#data-upload-file", str(notes))
    page.click("#data-upload-send")
    page.wait_for_selector("#data-upload-file-error:not(:empty)")
    refusal = page.inner_text("#data-upload-file-error")
    assert "notes.txt was not accepted: file: must be a .tar" in refusal
    assert "\n" not in refusal
    assert page.get_attribute("#data-upload-file", "aria-invalid") == "true"
    assert len(server.http.get("/v1/datasets").json()) == 1
    assert page.input_value("#data-upload") == str(dataset["id"])  # the earlier choice stays
    _shot(page, tmp_path, "uploads", height=1250)

    # A fresh form lists both uploads; pick them from the lists and submit a job on them.
    page.goto(server.url + "/#/jobs")
    page.wait_for_selector("#jobs-table")
    page.goto(server.url + "/#/submit")
    page.wait_for_selector(f'#data-upload option[value="{dataset["id"]}"]', state="attached")
    assert page.input_value("#upload") == ""
    assert page.input_value("#data-upload") == ""
    page.select_option("#upload", str(model["id"]))
    page.select_option("#data-upload", str(dataset["id"]))
    assert "input 1\u00d716\u00d716" in page.inner_text("#upload-detail")  # C x H x W of the program
    page.fill("#target-value", "0.6")
    page.fill("#finetune-epochs", "0")
    page.click("#submit")
    page.wait_for_url(re.compile(r"#/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    spec = server.job(job_id)["spec"]
    assert spec["model"]["upload"] == model["id"]
    assert spec["data"]["upload"] == dataset["id"]
    page.wait_for_function(
        "(want) => want.every((w) => document.querySelector('#job-meta').innerText.includes(w))",
        arg=[f"model upload #{model['id']}", f"data upload #{dataset['id']}"],
    )
    page.wait_for_function(
        "() => document.querySelector('#job-status').innerText === 'succeeded' || (window.__secateurs.points || 0) > 0",
        timeout=120_000,
    )
    assert page.inner_text("#job-status") in ("running", "succeeded"), server.job(job_id).get("error")
    assert page.evaluate("() => window.__secateurs.scoreAxis") == "accuracy"  # no score_name: accuracy
    page.click("nav a[data-nav=jobs]")
    assert f"upload #{model['id']}" in page.locator(f'tr[data-job-id="{job_id}"]').inner_text(timeout=10_000)
    server.http.post(f"/v1/jobs/{job_id}/cancel")


def test_a_segmentation_job_from_the_dashboard_alone(server, page, tmp_path):
    """From the page only: upload a torchvision-style segmenter (`{"out", "aux"}` logits at the
    input's size) and a masks archive, pick both from the team's lists with the segmentation
    task, submit, watch the job to its end, and read its mIoU and predictions on the page; the
    returned program keeps both outputs."""
    import io

    import torch
    from corpus import build

    from pruning.export import export_program
    from pruning.segmentation.scenes import SCENE_CLASSES, write_scenes_archive

    classes = len(SCENE_CLASSES)
    net = build("deeplabv3_tv", num_classes=classes)
    program = export_program(net, tmp_path / "deeplab_tv.pt2", (3, 32, 32))
    scenes = write_scenes_archive(tmp_path / "scenes.tar.gz", {"train": 48, "val": 16, "test": 16}, size=32)

    _sign_in(page, server.url, server.token)
    page.goto(server.url + "/#/submit")
    page.wait_for_selector("#upload-file[accept]", state="attached")
    page.set_input_files("#upload-file", str(program))
    page.click("#upload-send")
    _uploaded(page, "upload")
    page.set_input_files("#data-upload-file", str(scenes))
    page.click("#data-upload-send")
    _uploaded(page, "data-upload")
    model = max(server.http.get("/v1/models").json(), key=lambda m: m["id"])
    dataset = max(server.http.get("/v1/datasets").json(), key=lambda d: d["id"])
    assert (model["filename"], dataset["filename"]) == ("deeplab_tv.pt2", "scenes.tar.gz")

    # A fresh form: both come from the team's lists, described as a segmenter and a masks set.
    page.goto(server.url + "/#/jobs")
    page.wait_for_selector("#jobs-table")
    page.goto(server.url + "/#/submit")
    page.wait_for_selector(f'#data-upload option[value="{dataset["id"]}"]', state="attached")
    page.select_option("#upload", str(model["id"]))
    page.select_option("#data-upload", str(dataset["id"]))
    assert f"{classes} classes" in page.inner_text(f'#upload option[value="{model["id"]}"]')  # K of (K, H, W)
    assert "outputs out 4\u00d732\u00d732, aux 4\u00d732\u00d732" in page.inner_text("#upload-detail")
    assert ", ".join(SCENE_CLASSES) in page.inner_text("#data-upload-detail")
    page.select_option("#task", "segmentation")
    page.select_option("#strategy", "uniform")
    page.fill("#target-value", "0.5")
    page.fill("#finetune-epochs", "1")
    page.click("#submit")
    page.wait_for_url(re.compile(r"#/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    spec = server.job(job_id)["spec"]
    assert (spec["task"], spec["model"]["upload"], spec["data"]["upload"]) == (
        "segmentation",
        model["id"],
        dataset["id"],
    )

    page.wait_for_function(
        "() => ['succeeded', 'failed', 'cancelled'].includes(document.querySelector('#job-status').innerText)",
        timeout=600_000,  # a guard against a hang
    )
    assert page.inner_text("#job-status") == "succeeded", server.job(job_id).get("error")
    summary = server.job(job_id)["summary"]
    assert (summary["task"], summary["score_name"]) == ("segmentation", "miou")
    page.wait_for_selector("#before-after")
    assert page.evaluate("() => window.__secateurs.scoreAxis") == "mIoU"  # the task's own label
    n = summary["candidates"]
    assert page.inner_text("#job-phase").startswith(f"Done: {n} candidate{'' if n == 1 else 's'} in ")
    assert page.locator("#before-after tbody th").first.inner_text() == "mIoU"
    assert f"{summary['accuracy_after'] * 100:.2f} %" in page.inner_text("#before-after")
    page.wait_for_function(  # the unpruned and pruned networks' masks, drawn on the page
        "() => [...document.querySelectorAll('#pictures img')].some("
        "(i) => i.dataset.artifact.startsWith('previews/') && i.complete && i.naturalWidth > 0)"
    )
    _shot(page, tmp_path, "segmentation", height=1300)

    # The returned program still answers with both outputs, per pixel, at the input's size.
    returned = server.http.get(f"/v1/jobs/{job_id}/artifacts/model.pt2")
    assert returned.status_code == 200
    module = torch.export.load(io.BytesIO(returned.content)).module()
    with torch.no_grad():
        out = module(torch.randn(2, 3, 32, 32))
    assert list(out) == ["out", "aux"]
    assert all(tuple(t.shape) == (2, classes, 32, 32) for t in out.values())
    assert summary["flops_after"] <= 0.5 * summary["flops_before"]


N_CANDIDATES = 5000
N_EPISODES = 40
SUBMITTED: list[dict] = []  # job bodies the stand-in API received


def _candidate(rng, i: int, keys: list[str], phase: str = "search", meta: dict | None = None) -> dict:
    policy = {k: round(rng.uniform(0.0, 0.9), 3) for k in keys}
    keep = 1.0 - sum(policy.values()) / len(keys)
    return {
        "id": i,
        "seq": i,
        "proposal_id": i - 1,
        "policy": policy,
        "phase": phase,
        "meta": meta or {},
        "score": max(0.05, 0.95 - 0.6 * (1 - keep) ** 2 - rng.uniform(0, 0.15)),
        "flops": int(4e7 * keep**2),
        "params": int(1e6 * keep**2),
        "memory_bytes": 0,
        "latency_ms": None,
        "wall_seconds": 0.1,
    }


def _standin_api(hits: dict[str, int]):
    """A tiny stand-in for `/v1` serving the real dashboard router, for what a short real job
    cannot show: job 1 runs with 5,000 candidates of 20 layers, job 2 failed, job 3 is an AMC
    search, job 4 a finished latency search deployed with onnxruntime, job 5 a finished job whose
    summary names its score (`score_name`: miou). `hits` counts requests per path."""
    import random

    from fastapi import Body, FastAPI, Header, HTTPException, Request, Response

    from service.dashboard import router

    rng = random.Random(0)
    keys = [f"features.{3 * i}" for i in range(20)]
    spec = {
        "model": {"zoo": "convnet"},
        "data": {"name": "digits"},
        "target": {"kind": "flops", "value": 0.5, "absolute": False},
    }
    base = {
        "priority": 0,
        "best": None,
        "summary": None,
        "error": None,
        "traceback": None,
        "attempts": 1,
        "cancel_requested": False,
        "created_at": "2026-01-01T00:00:00Z",
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": None,
        "heartbeat_at": None,
    }
    jobs = {
        1: (
            {
                **base,
                "id": 1,
                "status": "running",
                "phase": "search: stand-in",
                "progress": 0.5,
                "candidates_evaluated": N_CANDIDATES,
                "spec": {**spec, "strategy": {"name": "optuna"}},
            },
            [_candidate(rng, i, keys) for i in range(1, N_CANDIDATES + 1)],
        ),
        2: (
            {
                **base,
                "id": 2,
                "status": "failed",
                "phase": "search",
                "progress": 0.1,
                "candidates_evaluated": 0,
                "finished_at": "2026-01-01T00:01:00Z",
                "spec": {**spec, "strategy": {"name": "netadapt"}},
                "error": "SearchError: netadapt option 'steps' must be positive\nraised while building the strategy",
                "traceback": 'Traceback (most recent call last):\n  File "search/registry.py", line 50\nSearchError',
            },
            [],
        ),
        3: (
            {
                **base,
                "id": 3,
                "status": "running",
                "phase": f"AMC episode {N_EPISODES}/100",
                "progress": 0.4,
                "candidates_evaluated": N_EPISODES,
                "spec": {**spec, "strategy": {"name": "amc", "options": {"episodes": 100}}},
            },
            [
                _candidate(rng, i, keys[:4], "episode", {"episode": i - 1, "warmup": i <= 10})
                for i in range(1, N_EPISODES + 1)
            ],
        ),
        4: (
            {
                **base,
                "id": 4,
                "status": "succeeded",
                "phase": "done",
                "progress": 1.0,
                "candidates_evaluated": 3,
                "finished_at": "2026-01-01T00:02:00Z",
                "spec": {
                    **spec,
                    "target": {"kind": "latency", "value": 0.6, "absolute": False},
                    "strategy": {"name": "uniform"},
                    "runtime": "onnxruntime",
                },
                "summary": {
                    "candidates": 3,
                    "search_seconds": 4.0,
                    "accuracy_before": 0.9,
                    "accuracy_after": 0.88,
                    "flops_before": 4e7,
                    "flops_after": 1e7,
                    "params_before": 1e6,
                    "params_after": 2.5e5,
                    "latency_ms_before": 2.5,
                    "latency_ms_after": 1.25,
                    "runtime": "onnxruntime",
                    "original_channels": dict.fromkeys(keys[:4], 16),
                },
            },
            [{**_candidate(rng, i, keys[:4]), "latency_ms": 2.5 - 0.4 * i} for i in range(1, 4)],
        ),
        5: (
            {
                **base,
                "id": 5,
                "status": "succeeded",
                "phase": "done",
                "progress": 1.0,
                "candidates_evaluated": 3,
                "finished_at": "2026-01-01T00:02:00Z",
                "spec": {**spec, "strategy": {"name": "uniform"}},
                "summary": {
                    "candidates": 3,
                    "search_seconds": 4.0,
                    "score_name": "miou",  # as the segmentation task names it; the page writes "mIoU"
                    "accuracy_before": 0.61,
                    "accuracy_after": 0.58,
                    "flops_before": 4e7,
                    "flops_after": 2e7,
                    "original_channels": dict.fromkeys(keys[:4], 16),
                },
            },
            [_candidate(rng, i, keys[:4]) for i in range(1, 4)],
        ),
    }
    events = [
        {
            "id": 1,
            "kind": "phase",
            "message": "phase: search",
            "created_at": "2026-01-01T00:00:00Z",
            "data": {"phase": "search", "budget": 2e7},
        }
    ]
    app = FastAPI()
    app.include_router(router)

    @app.middleware("http")
    async def count(request: Request, call_next):
        hits[request.url.path] = hits.get(request.url.path, 0) + 1
        return await call_next(request)

    def auth(authorization: str) -> None:
        if authorization != "Bearer standin":
            raise HTTPException(401, "bad token")

    @app.get("/v1/me")
    def me(authorization: str = Header("")):
        auth(authorization)
        return {"team": "standin", "id": 1}

    @app.get("/v1/jobs")
    def list_jobs(authorization: str = Header("")):
        auth(authorization)
        return {"items": [j for j, _ in jobs.values()], "total": len(jobs), "limit": 50, "offset": 0}

    @app.get("/v1/jobs/{job_id}")
    def one(job_id: int, authorization: str = Header("")):
        auth(authorization)
        return jobs[job_id][0]

    @app.get("/v1/jobs/{job_id}/candidates")
    def candidates(job_id: int, after: int = 0, limit: int = 500, authorization: str = Header("")):
        auth(authorization)
        return jobs[job_id][1][after : after + limit]

    @app.get("/v1/jobs/{job_id}/events")
    def job_events(job_id: int, after: int = 0, authorization: str = Header("")):
        auth(authorization)
        return events[after:]

    def png(width: int, height: int) -> bytes:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
        return buf.getvalue()

    pictures = {"previews/0.png": png(388, 206), "previews/1.png": png(388, 206), "pareto.png": png(320, 240)}

    @app.get("/v1/jobs/{job_id}/artifacts")
    def artifacts(job_id: int, authorization: str = Header("")):
        auth(authorization)
        names = [*pictures, "model.safetensors"] if job_id == 5 else []
        url = f"/v1/jobs/{job_id}/artifacts/"
        return [{"name": n, "size": len(pictures.get(n, b"")), "sha256": None, "url": url + n} for n in names]

    @app.get("/v1/jobs/{job_id}/artifacts/{name:path}")
    def artifact(job_id: int, name: str, authorization: str = Header("")):
        auth(authorization)
        return Response(pictures[name], media_type="application/octet-stream")

    @app.post("/v1/jobs", status_code=201)
    def submit(body: dict = Body(...), authorization: str = Header("")):
        auth(authorization)
        SUBMITTED.append(body)
        return jobs[2][0]

    return app


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[str, dict[str, int]]]:
    import uvicorn

    hits: dict[str, int] = {}
    srv = uvicorn.Server(
        uvicorn.Config(
            _standin_api(hits), host="127.0.0.1", port=free_port(), log_level="warning", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{srv.config.port}", hits
    srv.should_exit = True
    thread.join(timeout=10)


def test_five_thousand_candidates_render_without_freezing(standin, page):
    base, _ = standin
    _sign_in(page, base, "standin")
    # Long tasks (>50 ms on the main thread) are what a user feels as a freeze.
    page.evaluate("""() => { window.__longTasks = [];
        new PerformanceObserver((l) => l.getEntries().forEach((e) => window.__longTasks.push(e.duration)))
          .observe({ type: "longtask", buffered: true }); }""")
    t0 = time.perf_counter()
    page.click('tr[data-job-id="1"] a')
    page.wait_for_function(f"() => window.__secateurs && window.__secateurs.points === {N_CANDIDATES}", timeout=60_000)
    load_s = time.perf_counter() - t0
    render_ms = page.evaluate("() => window.__secateurs.lastRenderMs")
    longest = page.evaluate("() => Math.max(0, ...window.__longTasks)")
    # Hovering a point still answers: the Inspect panel shows that candidate's 20 layers.
    page.locator("#scatter").scroll_into_view_if_needed()
    where = page.evaluate(f"() => window.__secateurs.pixelOf({N_CANDIDATES - 1})")
    t1 = time.perf_counter()
    page.mouse.move(where["x"], where["y"])
    page.wait_for_function("() => document.querySelector('#inspect').innerText.includes('hovered')", timeout=5_000)
    hover_s = time.perf_counter() - t1
    assert page.locator("#inspect li").count() == 20
    print(
        f"\n{N_CANDIDATES} candidates: page load to all drawn {load_s:.2f} s, scatter update {render_ms:.0f} ms, "
        f"longest main-thread task {longest:.0f} ms, hover to per-layer rates {hover_s * 1000:.0f} ms"
    )
    assert render_ms < 2000
    assert longest < 3000


def test_failed_job_amc_rewards_and_polling_pauses_on_a_hidden_tab(standin, page):
    base, hits = standin
    _sign_in(page, base, "standin")
    page.goto(base + "/#/jobs/2")
    page.wait_for_selector("#job-error:not([hidden])")
    error = page.locator("#job-error")
    assert "netadapt option 'steps' must be positive" in error.inner_text()
    page.click("#job-error summary")
    assert "Traceback" in error.locator("pre").inner_text()
    assert page.locator("#cancel").is_hidden()

    page.goto(base + "/#/jobs/3")
    page.wait_for_selector("#reward-card:not([hidden])")
    assert page.evaluate("() => window.__secateurs.rewardPoints") == N_EPISODES

    # Hidden tab: no requests; shown again: polling resumes at once.
    set_hidden = """(h) => { Object.defineProperty(document, "hidden", { value: h, configurable: true });
                              document.dispatchEvent(new Event("visibilitychange")); }"""
    page.evaluate(set_hidden, True)
    time.sleep(0.5)  # a request already in flight may land
    before = hits.get("/v1/jobs/3", 0)
    time.sleep(4)
    assert hits.get("/v1/jobs/3", 0) == before
    page.evaluate(set_hidden, False)
    deadline = time.monotonic() + 3
    while hits.get("/v1/jobs/3", 0) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hits.get("/v1/jobs/3", 0) > before


def test_submit_form_sends_the_iterative_schedule_and_streams(standin, page):
    from workers.config import JobConfig

    base, _ = standin
    assert httpx.get(base + "/dashboard/choices.json").json()["prune_schedules"] == ["one-shot", "iterative"]
    _sign_in(page, base, "standin")
    page.goto(base + "/#/submit")
    page.wait_for_selector("#prune-schedule option[value=iterative]", state="attached")
    page.select_option("#prune-schedule", "iterative")
    page.fill("#rounds", "4")
    page.fill("#kd-alpha", "0.5")
    page.select_option("#streams", "last")
    page.click("#submit")
    page.wait_for_url(re.compile(r"#/jobs/2$"))
    body = SUBMITTED[-1]
    assert body["finetune"] == {"prune_schedule": "iterative", "rounds": 4, "kd_alpha": 0.5}
    assert body["space"] == {"streams": "last"}
    cfg = JobConfig.model_validate(body)  # what the form sends is a job the API takes
    assert (cfg.finetune.prune_schedule, cfg.finetune.rounds, cfg.finetune.kd_alpha) == ("iterative", 4, 0.5)
    assert cfg.space.streams == "last"


def test_latency_figures_name_the_runtime_and_the_form_offers_it(standin, page):
    from pruning.runtime import RUNTIMES
    from workers.config import JobConfig

    base, _ = standin
    assert httpx.get(base + "/dashboard/choices.json").json()["runtimes"] == list(RUNTIMES)
    _sign_in(page, base, "standin")
    page.goto(base + "/#/jobs/4")
    page.wait_for_selector("#before-after")
    assert "Latency (batch 1, onnxruntime)" in page.inner_text("#before-after")
    assert "runtime onnxruntime" in page.inner_text("#job-meta")
    page.focus("#scatter")
    page.keyboard.press("Home")
    assert "latency (onnxruntime)" in page.inner_text("#inspect").lower()  # the CSS upper-cases labels

    page.goto(base + "/#/submit")
    page.wait_for_selector("#runtime option[value=onnxruntime]", state="attached")
    page.select_option("#runtime", "onnxruntime")
    page.click("#submit")
    page.wait_for_url(re.compile(r"#/jobs/2$"))
    body = SUBMITTED[-1]
    assert body["runtime"] == "onnxruntime"
    assert JobConfig.model_validate(body).runtime == "onnxruntime"  # what the form sends is a job the API takes


def test_the_score_is_named_as_the_summary_names_it(standin, page):
    base, _ = standin
    _sign_in(page, base, "standin")
    page.goto(base + "/#/jobs/5")
    page.wait_for_selector("#before-after")
    assert page.locator("#before-after tbody th").first.inner_text() == "mIoU"
    # the previews and the search's plot are shown on the page, fetched with the token
    page.wait_for_function(
        "() => document.querySelectorAll('#pictures img').length === 3 && "
        "[...document.querySelectorAll('#pictures img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    shown = page.eval_on_selector_all("#pictures img", "(xs) => xs.map((i) => [i.dataset.artifact, i.naturalWidth])")
    assert shown == [["previews/0.png", 388], ["previews/1.png", 388], ["pareto.png", 320]]
    assert "before and after pruning" in page.inner_text("#pictures")
    assert page.evaluate("() => window.__secateurs.scoreAxis") == "mIoU"
    assert "final miou" in page.inner_text("#job-facts").lower()  # the CSS upper-cases labels
    page.focus("#scatter")
    page.keyboard.press("Home")
    assert "miou" in page.inner_text("#inspect").lower()
    page.goto(base + "/#/jobs/4")  # a summary without score_name: accuracy, as before
    page.wait_for_selector("#before-after")
    assert page.locator("#before-after tbody th").first.inner_text() == "Accuracy"
    page.wait_for_function("() => window.__secateurs.scoreAxis === 'accuracy'")


def test_the_task_field_lists_what_the_server_serves(standin, page):
    """The form has no task names of its own: served a `tasks` list it offers them and sends
    the one picked; served none (the page's other tests), the field stays hidden."""
    base, _ = standin
    served = ["classification", "segmentation"]  # whatever the server's registry holds

    def with_tasks(route):
        resp = route.fetch()
        route.fulfill(response=resp, json={**resp.json(), "tasks": served})

    page.route("**/dashboard/choices.json", with_tasks)
    _sign_in(page, base, "standin")
    page.goto(base + "/#/submit")
    page.wait_for_selector("#task option[value=segmentation]", state="attached")
    assert page.locator("#task").is_visible()
    assert page.locator("#task option").all_inner_texts() == ["API default", *served]
    page.select_option("#task", "segmentation")
    page.click("#submit")
    page.wait_for_url(re.compile(r"#/jobs/2$"))
    assert SUBMITTED[-1]["task"] == "segmentation"
