"""Architectures from installed packages: a `secateurs.models` entry point (here a tiny
dist-info on sys.path, read by importlib.metadata) joins the zoo at registry load, and
`GET /v1/zoo`, `secateurs search --help` and a job spec see it; a broken one is skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = """
from torch import nn


def resnet_se(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    c = max(4, int(16 * width))
    return nn.Sequential(
        nn.Conv2d(in_channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes),
    )
"""

CHECK = """
import json, sys
from fastapi.testclient import TestClient
from pruning.models import build_model, list_models
from service.api import create_app
from service.config import Settings
from workers.config import JobConfig

settings = Settings(data_dir=sys.argv[1], scheduler=False)
app = create_app(settings)
with TestClient(app) as client:
    token = app.state.store.create_token("acme")
    zoo = client.get("/v1/zoo", headers={"Authorization": f"Bearer {token}"}).json()
net = build_model("acme.resnet_se", num_classes=7, in_channels=1)
spec = JobConfig.model_validate({"model": {"zoo": "acme.resnet_se"}, "data": {"name": "digits"},
                                 "target": {"flops": 0.5}, "strategy": {"name": "uniform"}})
print(json.dumps({"zoo": zoo, "models": list_models(), "out": net[-1].out_features, "spec": spec.model.zoo}))
"""


def _dist(root: Path, name: str, entry_points: str, module: str | None = None) -> None:
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    if module is not None:
        (root / f"{name}.py").write_text(module)


def test_entry_point_models_join_the_zoo_the_api_and_the_cli(tmp_path) -> None:
    site = tmp_path / "site"
    _dist(site, "acme_nets", "[secateurs.models]\nacme.resnet_se = acme_nets:resnet_se\n", textwrap.dedent(PACKAGE))
    _dist(site, "broken_nets", "[secateurs.models]\nbroken = no_such_module_xyz:factory\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path / "data")],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert "acme.resnet_se" in got["zoo"]
    assert "convnet" in got["zoo"]
    assert got["zoo"] == got["models"]
    assert "broken" not in got["models"]
    assert got["out"] == 7
    assert got["spec"] == "acme.resnet_se"
    assert "broken" in run.stderr  # the skipped entry point is logged
    cli = Path(sys.executable).parent / "secateurs"
    helped = subprocess.run(
        [str(cli), "search", "--help"], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "  acme.resnet_se" in helped.stdout
