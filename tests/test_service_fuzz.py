"""The API fuzzed from its own OpenAPI document (schemathesis, issue 13): every operation of
the app, in process (ASGI) on SQLite with a valid token and no scheduler (so nothing it
submits ever trains), through schemathesis' coverage phase (boundary and invalid values of
every parameter) and a bounded, deterministic fuzzing phase. No response may be a 5xx, have
a status code the document does not declare for the operation, or a body unlike the declared
one. The engine is the one `schemathesis run` drives; the longer run against PostgreSQL is a
command in docs/service.md ("Fuzzing the API")."""

from __future__ import annotations

from collections import Counter

import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events

from service.api import create_app
from service.config import Settings

CHECKS = ("not_a_server_error", "status_code_conformance", "response_schema_conformance")
FUZZ_EXAMPLES = 50
"""Examples per operation in the fuzzing phase: the run stays within a few minutes on 2 busy cores."""


def fuzz_config(token: str, max_examples: int = FUZZ_EXAMPLES) -> SchemathesisConfig:
    """Coverage and fuzzing phases, the checks above only, deterministic data (the same
    requests every run: Hypothesis derandomized, so no seed is drawn)."""
    return SchemathesisConfig.from_dict(
        {
            "headers": {"Authorization": f"Bearer {token}"},
            "generation": {"max-examples": max_examples, "deterministic": True, "mode": "all"},
            "phases": {
                "examples": {"enabled": False},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    )


def run_fuzz(schema) -> tuple[list[str], Counter, set[str]]:
    """Run the engine over `schema`: (one line per failed check or error, status codes seen, phases run)."""
    problems: list[str] = []
    statuses: Counter = Counter()
    phases: set[str] = set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            phases.add(str(event.phase))
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    statuses[interaction.response.status_code] += 1
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        problems.append(
                            f"{event.label}: {check.name}: {failure.title}: {failure.message}"[:500]
                            + "\n  "
                            + check.failure_info.code_sample[:300]
                        )
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            problems.append(f"{getattr(event, 'label', '')}: error: {event.info.title}: {event.info.message}"[:500])
    return problems, statuses, phases


def seeded_app(settings: Settings) -> tuple[FastAPI, str]:
    """A scheduler-less app, migrated, with a team token, an uploaded model (id 1) and a queued
    job (id 1), so ids the fuzzer tries first (the minimum, 1) reach real rows and 200 bodies."""
    from test_service_support import upload_small_convnet

    assert not settings.scheduler, "a fuzzer must never start real jobs"
    app = create_app(settings)
    settings.ensure_dirs()
    app.state.store.migrate()
    token = app.state.store.create_token("fuzz")
    h = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        r = upload_small_convnet(client, h)
        assert r.status_code == 201, r.text
        spec = {"model": {"zoo": "convnet"}, "data": {"name": "digits"}, "target": {"flops": 0.5}}
        r = client.post("/v1/jobs", json={**spec, "strategy": {"name": "uniform"}}, headers=h)
        assert r.status_code == 201, r.text
    return app, token


def test_fuzzing_finds_no_server_error_and_every_answer_is_documented(tmp_path):
    app, token = seeded_app(Settings(data_dir=tmp_path / "data", scheduler=False, max_upload_bytes=200_000))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=fuzz_config(token))
    problems, statuses, phases = run_fuzz(schema)
    assert problems == [], "\n".join(sorted(set(problems))[:40])
    assert {"coverage", "fuzzing"} <= {p.lower() for p in phases}, phases
    assert not [code for code in statuses if code >= 500], statuses
    for code in (200, 401, 404, 422):  # the run reached the app's answers, not only the framework's
        assert statuses[code] > 0, statuses
