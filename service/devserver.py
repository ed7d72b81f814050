"""The real `secateurs serve` as a subprocess on a free port, with a temporary data dir and a
small local Ray: used by the end-to-end tests and `bench/load.py`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "secateurs"]
"""The `secateurs` command line, run as a subprocess (the server and admin commands)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(RuntimeError):
    """The server could not bind its port: something took it after it was picked."""


class ServerProcess:
    """`secateurs serve` as a real subprocess on a free port, in its own session so the local
    Ray it starts can be killed with it; `kill()` is a SIGKILL of the whole group."""

    def __init__(self, data_dir: Path, database_url: str | None = None, port: int | None = None, **env: str) -> None:
        """`port`: the one to serve on (default: a free one the OS picks)."""
        self.own_port = port is None  # a port picked here may be taken before the server binds it
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "SECATEURS_DATA_DIR": str(data_dir),
            "SECATEURS_RAY_NUM_CPUS": "2",
            # one evaluation actor (the service's default is 2): on a 2-core test machine a
            # second only competes with the first; tests of the fan-out ask for more
            "SECATEURS_EVAL_WORKERS": "1",
            "SECATEURS_HEARTBEAT_SECONDS": "1",
            "SECATEURS_STALE_AFTER_SECONDS": "10",
            "SECATEURS_POLL_SECONDS": "0.5",
            "SECATEURS_CANCEL_GRACE_SECONDS": "3",
            "RAY_ADDRESS": "",
            **env,
        }
        if database_url:
            self.env["SECATEURS_DATABASE_URL"] = database_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run a `secateurs` command with this server's environment."""
        return subprocess.run(
            [*CLI, *args],
            env={**self.env, "SECATEURS_URL": self.url},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,  # callers read the exit status
        )

    def start(self, timeout: float = 120, attempts: int = 3) -> ServerProcess:
        """Start the server and wait for /healthz. A port picked here that something else took
        before the server bound it (the local Ray the server starts first opens random ports)
        is replaced by another free one, up to `attempts` starts."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except PortTaken:
                if not self.own_port or attempt == attempts - 1:
                    raise
                self._reap_group()
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.log = self.data_dir.parent / f"server-{self.port}.log"
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> ServerProcess:
        import httpx

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--port", str(self.port), "--log-level", "warning"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-3000:]
                if "address already in use" in tail:
                    raise PortTaken(f"port {self.port} was taken: {tail}")
                raise RuntimeError(f"server exited with {self.proc.returncode}: {tail}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"server did not answer in {timeout} s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server and everything in its session (its local Ray included)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._reap_group()

    def stop(self) -> None:
        """Graceful stop (SIGTERM), then make sure nothing of the session is left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        self._reap_group()

    def _reap_group(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
