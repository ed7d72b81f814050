"""Deployment files without a Docker engine: the compose file parses, has the four services,
and every command it runs is an entry point the image installs (`secateurs` from our
pyproject, the `secateurs` package's `main`; `ray` from Ray) with arguments those commands
accept; the Dockerfile copies every package and installs CPU torch before the project, and
its base image and package indexes are build arguments whose defaults are the public ones.
The local override that scripts/cluster-local.sh uses (docker/local/) is checked the same way. The cluster itself was
run for real by that script (docs/cluster.md); it needs a Docker engine, so it is not a test."""

from __future__ import annotations

import re
import shlex
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "docker" / "local"
PACKAGES = ("pruning", "search", "workers", "service", "secateurs")


def _compose(path: Path = ROOT / "docker-compose.yml") -> dict:
    return yaml.safe_load(path.read_text())


def _instructions(path: Path) -> list[str]:
    """A Dockerfile's instructions, one per line (no comments; continuation lines joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _args(lines: list[str]) -> dict[str, str | None]:
    """`ARG NAME=default` declarations: name -> default (None without one)."""
    out: dict[str, str | None] = {}
    for line in lines:
        if line.startswith("ARG "):
            name, _, default = line[4:].strip().partition("=")
            out[name] = default or None
    return out


def _commands(command: list[str]) -> list[list[str]]:
    """The programs a compose `command` runs: itself, or each `&&` step of `sh -c "..."`."""
    if command[0] != "sh":
        return [command]
    assert command[1] == "-c"
    assert len(command) == 3
    steps = [shlex.split(step) for step in command[2].split("&&")]
    return [step[1:] if step[0] == "exec" else step for step in steps]


def _check_command(argv: list[str]) -> None:
    """`argv` is `secateurs serve ...` or `ray start ...` with options those commands accept."""
    from ray.scripts.scripts import cli as ray_cli

    from secateurs import build_parser

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    console = {ep.name for ep in entry_points(group="console_scripts")}
    exe, *args = argv
    if exe == "secateurs":
        assert scripts["secateurs"] == "secateurs:main"
        parsed = build_parser().parse_args(args)
        assert parsed.func.__module__ == "secateurs.server"
    else:
        assert exe == "ray", argv
        assert "ray" in console
        sub = ray_cli.commands[args[0]]
        known = {opt for p in sub.params for opt in p.opts}
        assert {a.split("=")[0] for a in args[1:]} <= known, args


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
    for name, svc in _compose()["services"].items():
        if "command" not in svc:
            assert "image" in svc
            assert name == "postgres"
            continue
        for argv in _commands(svc["command"]):
            _check_command(argv)


def test_the_api_joins_the_ray_cluster_before_serving():
    # a Ray driver needs a raylet on its own host: `ray start` into the head, then the server
    steps = _commands(_compose()["services"]["api"]["command"])
    assert [s[:2] for s in steps] == [["ray", "start"], ["secateurs", "serve"]]
    assert "--address=ray-head:6379" in steps[0]
    assert "--num-cpus=0" in steps[0]  # the API's host takes no evaluations
    assert "--head" not in steps[0]


def test_nodes_join_a_healthy_head_and_are_restarted_if_joining_fails():
    services = _compose()["services"]
    check = services["ray-head"]["healthcheck"]["test"]
    assert check[0] == "CMD"
    _check_command(check[1:])
    assert check[1:3] == ["ray", "health-check"]
    for name in ("ray-worker", "api"):
        assert services[name]["depends_on"]["ray-head"] == {"condition": "service_healthy"}
        assert services[name]["restart"] == "on-failure"  # `ray start` exits non-zero on a join timeout
    assert services["api"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_published_ports_default_to_the_served_ones():
    services = _compose()["services"]
    served = {"api": "8000", "ray-head": "8265"}
    for name, port in served.items():
        (spec,) = services[name]["ports"]
        m = re.fullmatch(r"\$\{(\w+):-(\d+)\}:(\d+)", spec)
        assert m, spec
        assert m.group(2) == m.group(3) == port
    cmd = services["api"]["command"][-1]
    assert "--port 8000" in cmd


def test_dockerfile_installs_cpu_torch_first_then_the_project():
    lines = _instructions(ROOT / "Dockerfile")
    torch_at = next(i for i, line in enumerate(lines) if "pip install torch" in line)
    deps_at = next(i for i, line in enumerate(lines) if "pip install -r /tmp/requirements.txt" in line)
    code_at = min(i for i, line in enumerate(lines) if line.startswith("COPY ") and "pyproject" not in line)
    project_at = next(i for i, line in enumerate(lines) if line.startswith("RUN pip install --no-deps ."))
    # torch, then the dependencies (from pyproject alone, so code edits keep that layer), then the code
    assert torch_at < deps_at < code_at < project_at
    assert lines[deps_at - 1] == "COPY pyproject.toml ./"
    assert "['project']['dependencies']" in lines[deps_at]
    assert '--index-url "$TORCH_INDEX_URL"' in lines[torch_at]
    assert lines[-1].startswith("CMD")
    assert '"secateurs", "serve"' in lines[-1]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert packages["include"] == [f"{pkg}*" for pkg in PACKAGES]
    for pkg in PACKAGES:
        assert any(line.startswith(f"COPY {pkg}") for line in lines)


def test_dockerfile_base_image_and_package_indexes_are_build_args_with_public_defaults():
    lines = _instructions(ROOT / "Dockerfile")
    from_at = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    assert lines[from_at] == "FROM ${BASE_IMAGE}"
    # declared before FROM (in scope for FROM only) ...
    assert _args(lines[:from_at]) == {"BASE_IMAGE": "python:3.11-slim"}
    # ... and the indexes after it, so the RUN steps see them (pip reads PIP_INDEX_URL itself)
    after = _args(lines[from_at:])
    assert after == {
        "PIP_INDEX_URL": "https://pypi.org/simple",
        "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
    }
    first_run = next(i for i, line in enumerate(lines) if line.startswith("RUN "))
    assert all(i < first_run for i, line in enumerate(lines) if line.startswith("ARG "))
    # docker-compose.yml builds with the defaults; the local override sets every one of them
    base, local = _compose()["services"], _compose(LOCAL / "compose.yml")["services"]
    for name in ("ray-head", "ray-worker", "api"):
        assert base[name]["build"] == "."
        assert local[name]["build"]["context"] == "."
        assert local[name]["build"]["args"] == {arg: f"${{{arg}}}" for arg in _args(lines)}


def test_build_context_keeps_what_the_dockerfile_copies_and_leaves_the_rest():
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    ignore = [line for line in ignore if line and not line.startswith("#")]
    assert ignore[0] == "*"  # everything out (.venv, build/ with its wheelhouse, .git) ...
    copied = set()
    for line in _instructions(ROOT / "Dockerfile"):
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            copied.update(sources)
    assert copied == {"pyproject.toml", "README.md", *PACKAGES}
    assert {f"!{src}" for src in copied} <= set(ignore)  # ... but what the image is built from


def test_local_override_builds_postgres_and_keeps_the_services():
    base = _compose()["services"]
    local = _compose(LOCAL / "compose.yml")["services"]
    assert set(local) <= set(base)
    pg = local["postgres"]
    assert pg["image"] != base["postgres"]["image"] == "postgres:15"  # the real default stays
    dockerfile = ROOT / pg["build"]["context"] / pg["build"]["dockerfile"]
    lines = _instructions(dockerfile)
    assert lines[0] == "ARG DEBIAN_IMAGE=secateurs-local/debian:bookworm"
    assert lines[1] == "FROM ${DEBIAN_IMAGE}"
    assert any("apt-get install" in line and "postgresql-15" in line for line in lines)
    assert any(line.startswith("ENV PATH=/usr/lib/postgresql/15/bin:") for line in lines)  # pg_isready
    volume = base["postgres"]["volumes"][0].split(":")[1]
    assert f"PGDATA={volume}" in " ".join(lines)
    # the official image's contract that docker-compose.yml relies on
    entry = (dockerfile.parent / "postgres-entrypoint.sh").read_text()
    for var in base["postgres"]["environment"]:
        assert var in entry
    for name in ("ray-head", "ray-worker", "api"):
        assert local[name]["build"]["network"] == "host"  # pip reaches the index on 127.0.0.1
    for svc in local.values():
        if "command" in svc:
            for argv in _commands(svc["command"]):
                _check_command(argv)


def test_local_python_base_stands_in_for_python_slim():
    lines = _instructions(LOCAL / "python.Dockerfile")
    assert lines[1] == "FROM ${DEBIAN_IMAGE}"
    assert any("python3-venv" in line and "python3 -m venv /opt/python" in line for line in lines)
    assert any(line.startswith("ENV PATH=/opt/python/bin:$PATH") for line in lines)  # `pip`, `python`
    script = (ROOT / "scripts" / "cluster-local.sh").read_text()
    assert "docker/local/python.Dockerfile" in script
    assert "debootstrap --variant=minbase bookworm" in script
