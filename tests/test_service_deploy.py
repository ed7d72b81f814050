"""Deployment files without a Docker engine: the compose file parses, has the four services,
and every command it runs is an entry point the image installs (`secateurs` from our
pyproject, `ray` from Ray) with arguments those commands accept; the Dockerfile installs CPU
torch before the project."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_services_and_a_shared_store():
    services = _compose()["services"]
    assert set(services) == {"postgres", "ray-head", "ray-worker", "api"}
    url = services["api"]["environment"]["SECATEURS_DATABASE_URL"]
    pg = services["postgres"]["environment"]
    assert (
        url == f"postgresql+psycopg://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    )
    for name in ("ray-head", "ray-worker", "api"):
        assert services[name]["environment"]["SECATEURS_DATABASE_URL"] == url
        assert "data:/data" in services[name]["volumes"]
    assert services["ray-worker"]["deploy"]["replicas"] >= 1
    assert services["api"]["environment"]["RAY_ADDRESS"] == "ray-head:6379"


def test_compose_commands_are_entry_points_the_image_has():
    from ray.scripts.scripts import cli as ray_cli

    from service.cli import build_parser

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    console = {ep.name for ep in entry_points(group="console_scripts")}
    for name, svc in _compose()["services"].items():
        if "command" not in svc:
            assert "image" in svc
            assert name == "postgres"
            continue
        exe, *args = svc["command"]
        if exe == "secateurs":
            assert "secateurs" in scripts
            parsed = build_parser().parse_args(args)
            assert parsed.func.__module__ == "service.cli.server"
        else:
            assert exe == "ray"
            assert "ray" in console
            sub = ray_cli.commands[args[0]]
            known = {opt for p in sub.params for opt in p.opts}
            assert {a.split("=")[0] for a in args[1:]} <= known, args


def test_dockerfile_installs_cpu_torch_first_then_the_project():
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    torch_at = next(i for i, line in enumerate(lines) if "pip install torch" in line)
    project_at = next(i for i, line in enumerate(lines) if line.startswith("RUN pip install ."))
    assert torch_at < project_at
    assert "download.pytorch.org/whl/cpu" in lines[torch_at]
    assert lines[-1].startswith("CMD")
    assert '"secateurs", "serve"' in lines[-1]
    for pkg in ("pruning", "search", "workers", "service"):
        assert any(line.startswith(f"COPY {pkg}") for line in lines)
