"""A small Python client for the REST API (httpx), used by the CLI and the tests. The server
URL and token come from the arguments or `SECATEURS_URL` / `SECATEURS_TOKEN`. API errors
raise `ApiError` carrying the server's one-line message; other failures a user can fix (no
server, a missing file, a bad checksum) raise `ClientError`."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from workers.status import FINAL

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    """A client failure to show the user as one line: no answer, a missing file, a bad download."""


class ApiError(ClientError):
    """An HTTP error from the service: `status` and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status, self.message = status, message


class Client:
    """Calls the Secateurs API as one team."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0) -> None:
        self.url = (url or os.environ.get("SECATEURS_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("SECATEURS_TOKEN")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._polled: dict[str, tuple[str, bytes]] = {}  # URL -> (ETag, body) of polled GETs

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach the Secateurs API at {self.url}: {exc}") from exc
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except (ValueError, AttributeError):
                detail = r.text
            raise ApiError(r.status_code, detail if isinstance(detail, str) else json.dumps(detail))
        return r

    def _poll(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET a polled resource conditionally: send the ETag of the last answer for this URL and,
        on 304 Not Modified, reuse that answer (the server skipped the body)."""
        key = str(self.http.build_request("GET", path, params=params).url)
        seen = self._polled.get(key)
        r = self._call("GET", path, params=params, headers={"If-None-Match": seen[0]} if seen else None)
        if r.status_code == 304 and seen is not None:
            return json.loads(seen[1])
        if etag := r.headers.get("etag"):
            if len(self._polled) >= 256:  # cursors make new URLs; keep the latest few
                self._polled.pop(next(iter(self._polled)))
            self._polled[key] = (etag, r.content)
        return r.json()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz").json()

    def upload_model(
        self, path: str | Path, zoo: str | None = None, args: dict[str, Any] | None = None, timeout: float = 600.0
    ) -> dict[str, Any]:
        """Upload a safetensors / weights-only .pt file for a zoo architecture, or a torch.export
        program (.pt2, no zoo: the server converts and checks it before answering, hence `timeout`)."""
        p = Path(path)
        if not p.is_file():
            raise ClientError(f"{p} does not exist")
        form = {"args": json.dumps(args or {})} | ({"zoo": zoo} if zoo else {})
        with open(p, "rb") as f:
            return self._call(
                "POST",
                "/v1/models",
                data=form,
                files={"file": (p.name, f, "application/octet-stream")},
                timeout=timeout,
            ).json()

    def upload_dataset(self, path: str | Path, timeout: float = 900.0) -> dict[str, Any]:
        """Upload an image folder archive (.tar, .tar.gz, .zip); the server unpacks and checks
        it before answering, hence the longer `timeout`. Returns the data set (its `id`)."""
        p = Path(path)
        if not p.is_file():
            raise ClientError(f"{p} does not exist")
        with open(p, "rb") as f:
            return self._call(
                "POST", "/v1/datasets", files={"file": (p.name, f, "application/octet-stream")}, timeout=timeout
            ).json()

    def datasets(self) -> list[dict[str, Any]]:
        """The team's uploaded data sets, newest first."""
        return self._call("GET", "/v1/datasets").json()

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Submit a job spec; returns the job (with its `id`)."""
        return self._call("POST", "/v1/jobs", json=spec).json()

    def jobs(self, status: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return self._call("GET", "/v1/jobs", params=params).json()

    def job(self, job_id: int) -> dict[str, Any]:
        """The job (a conditional GET: an unchanged job costs a 304)."""
        return self._poll(f"/v1/jobs/{job_id}")

    def candidates(self, job_id: int, after: int = 0) -> list[dict[str, Any]]:
        """Candidates with id > after (conditional GET)."""
        return self._poll(f"/v1/jobs/{job_id}/candidates", {"after": after})

    def events(self, job_id: int, after: int = 0) -> list[dict[str, Any]]:
        """Events with id > after (conditional GET)."""
        return self._poll(f"/v1/jobs/{job_id}/events", {"after": after})

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel").json()

    def artifacts(self, job_id: int) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/jobs/{job_id}/artifacts").json()

    def download(self, job_id: int, out_dir: str | Path) -> list[Path]:
        """Download every artifact into `out_dir`, checking each SHA-256."""
        out = Path(out_dir)
        paths = []
        for a in self.artifacts(job_id):
            dest = out / a["name"]
            if out.resolve() not in dest.resolve().parents:
                raise ClientError(f"refusing artifact name {a['name']!r} outside {out}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            with self.http.stream("GET", a["url"]) as r, open(dest, "wb") as f:
                if r.status_code >= 400:
                    raise ApiError(r.status_code, f"cannot download {a['name']}")
                for chunk in r.iter_bytes():
                    h.update(chunk)
                    f.write(chunk)
            if h.hexdigest() != a["sha256"]:
                raise ClientError(f"checksum mismatch for {a['name']}")
            paths.append(dest)
        return paths

    def follow(self, job_id: int, poll: float = 1.0, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield the job each poll until it reaches a final status."""
        t0 = time.monotonic()
        while True:
            job = self.job(job_id)
            yield job
            if job["status"] in FINAL:
                return
            if timeout is not None and time.monotonic() - t0 > timeout:
                raise ClientError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(poll)

    def wait(self, job_id: int, poll: float = 1.0, timeout: float | None = None) -> dict[str, Any]:
        """Poll until the job is final; returns it."""
        last: dict[str, Any] = {}
        for job in self.follow(job_id, poll, timeout):
            last = job
        return last
