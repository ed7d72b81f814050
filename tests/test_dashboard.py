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
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1400, "height": 900}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    env = {**os.environ, "SECATEURS_DATA_DIR": str(data), "SECATEURS_EVAL_WORKERS": "1",
           "SECATEURS_RAY_NUM_CPUS": "2", "SECATEURS_MAX_CONCURRENT_JOBS": "2", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("SECATEURS_DATABASE_URL", None)
    cli = [sys.executable, "-m", "service.cli"]
    made = subprocess.run([*cli, "token", "create", "--team", "vision"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    token = made.stdout.strip().splitlines()[-1]
    port = _free_port()
    log = open(data / "server.log", "w")
    proc = subprocess.Popen([*cli, "serve", "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
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


def _shot(page, tmp_path: Path, name: str) -> Path:
    """A viewport screenshot into the test's temp dir (and SECATEURS_SCREENSHOT_DIR if set)."""
    out = tmp_path / f"dashboard-{name}.png"
    page.screenshot(path=str(out))
    assert out.stat().st_size > 10_000
    extra = os.environ.get("SECATEURS_SCREENSHOT_DIR")
    if extra:
        shutil.copy(out, Path(extra) / out.name)
    return out


def _points(page) -> int:
    return page.evaluate("() => (window.__secateurs && window.__secateurs.points) || 0")


def test_watch_a_job_from_running_to_done_and_download_its_model(server, page, tmp_path):
    spec = {"model": {"zoo": "convnet"}, "data": {"name": "digits"}, "target": {"flops": 0.5},
            "strategy": {"name": "sensitivity", "options": {"rates": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}},
            "train": {"epochs": 1}, "finetune": {"epochs": 1}}
    job_id = server.http.post("/v1/jobs", json=spec).json()["id"]

    _sign_in(page, server.url, server.token)
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    row.wait_for(timeout=15_000)
    assert "sensitivity" in row.inner_text() and "convnet" in row.inner_text()
    row.locator("a").click()
    page.wait_for_selector("#job-title")
    assert page.inner_text("#job-title") == f"Job {job_id}"

    # Candidate points grow while the job runs.
    seen_running: list[int] = []
    shot_running = None
    deadline = time.monotonic() + 240
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
    assert page.inner_text("#job-phase").startswith("Done")

    # Hover a candidate: its per-layer rates appear in the Inspect panel; keyboard does the same.
    page.focus("#scatter")
    page.keyboard.press("Home")
    inspect = page.inner_text("#inspect")
    assert "selected" in inspect and re.search(r"\d+/\d+", inspect)

    # Download the pruned weights through the page; they match the API's checksum.
    artifacts = {a["name"]: a for a in server.http.get(f"/v1/jobs/{job_id}/artifacts").json()}
    with page.expect_download() as info:
        page.click('button[data-artifact="model.safetensors"]')
    saved = tmp_path / "model.safetensors"
    info.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == artifacts["model.safetensors"]["sha256"]
    page.evaluate("() => window.scrollTo(0, 0)")
    _shot(page, tmp_path, "done")


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


def _standin_api(n: int, layers: int = 20):
    """A tiny stand-in for `/v1` (one running job with `n` candidates over `layers` layers) that
    serves the real dashboard router: render cost depends on the browser, not on the server."""
    import random

    from fastapi import FastAPI, Header, HTTPException

    from service.dashboard import router

    rng = random.Random(0)
    keys = [f"features.{3 * i}" for i in range(layers)]
    cands = []
    for i in range(1, n + 1):
        policy = {k: round(rng.uniform(0.0, 0.9), 3) for k in keys}
        keep = 1.0 - sum(policy.values()) / layers
        cands.append({"id": i, "seq": i, "proposal_id": i - 1, "policy": policy, "phase": "search", "meta": {},
                      "score": max(0.05, 0.95 - 0.6 * (1 - keep) ** 2 - rng.uniform(0, 0.15)),
                      "flops": int(4e7 * keep ** 2), "params": int(1e6 * keep ** 2), "memory_bytes": 0,
                      "latency_ms": None, "wall_seconds": 0.1})
    job = {"id": 1, "status": "running", "phase": "search: stand-in", "progress": 0.5, "priority": 0,
           "candidates_evaluated": n, "best": None, "summary": None, "error": None, "attempts": 1,
           "cancel_requested": False, "created_at": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:00Z",
           "finished_at": None, "heartbeat_at": None,
           "spec": {"model": {"zoo": "convnet"}, "data": {"name": "digits"}, "strategy": {"name": "optuna"},
                    "target": {"kind": "flops", "value": 0.5, "absolute": False}}}
    events = [{"id": 1, "kind": "phase", "message": "phase: search", "created_at": "2026-01-01T00:00:00Z",
               "data": {"phase": "search", "budget": 2e7}}]
    app = FastAPI()
    app.include_router(router)

    def auth(authorization: str) -> None:
        if authorization != "Bearer perf":
            raise HTTPException(401, "bad token")

    @app.get("/v1/me")
    def me(authorization: str = Header("")):
        auth(authorization)
        return {"team": "perf", "id": 1}

    @app.get("/v1/jobs")
    def jobs(authorization: str = Header("")):
        auth(authorization)
        return {"items": [job], "total": 1, "limit": 50, "offset": 0}

    @app.get("/v1/jobs/1")
    def one(authorization: str = Header("")):
        auth(authorization)
        return job

    @app.get("/v1/jobs/1/candidates")
    def candidates(after: int = 0, limit: int = 500, authorization: str = Header("")):
        auth(authorization)
        return cands[after:after + limit]

    @app.get("/v1/jobs/1/events")
    def job_events(after: int = 0, authorization: str = Header("")):
        auth(authorization)
        return events[after:]

    return app


def test_five_thousand_candidates_render_without_freezing(page):
    import uvicorn

    n = 5000
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(_standin_api(n), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        while not srv.started:
            time.sleep(0.05)
        page.goto(base + "/")
        page.fill("#token", "perf")
        page.click("form button[type=submit]")
        page.wait_for_selector("#jobs-table")
        # Long tasks (>50 ms on the main thread) are what a user feels as a freeze.
        page.evaluate("""() => { window.__longTasks = [];
            new PerformanceObserver((l) => l.getEntries().forEach((e) => window.__longTasks.push(e.duration)))
              .observe({ type: "longtask", buffered: true }); }""")
        t0 = time.perf_counter()
        page.click('tr[data-job-id="1"] a')
        page.wait_for_function(f"() => window.__secateurs && window.__secateurs.points === {n}", timeout=60_000)
        load_s = time.perf_counter() - t0
        render_ms = page.evaluate("() => window.__secateurs.lastRenderMs")
        longest = page.evaluate("() => Math.max(0, ...window.__longTasks)")
        # Hovering a point still answers: the Inspect panel shows that candidate's layers.
        box = page.locator("#scatter").bounding_box()
        t1 = time.perf_counter()
        for dx in range(10, 90, 4):
            page.mouse.move(box["x"] + box["width"] * dx / 100, box["y"] + box["height"] * 0.5)
            if "hovered" in page.inner_text("#inspect"):
                break
        hover_s = time.perf_counter() - t1
        assert "hovered" in page.inner_text("#inspect")
        assert page.locator("#inspect li").count() == 20
        print(f"\n{n} candidates: page load to all drawn {load_s:.2f} s, scatter update {render_ms:.0f} ms, "
              f"longest main-thread task {longest:.0f} ms, hover sweep {hover_s:.2f} s")
        assert render_ms < 2000 and longest < 3000
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
