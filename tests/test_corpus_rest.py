"""The corpus through the REST path, on a real server: a network of each kind the REST path
reports differently is exported to `.pt2`, uploaded (`POST /v1/models`), pruned by a job to half
its FLOPs (0.7 for the two whose pinned groups hold too many; `corpus.LIMITED_TARGET`) on
3x32x32 synthetic data, and downloaded: a plain chain, depthwise convs, a cascaded concat, both
networks whose pinned groups limit the cut (warning events, the limited target) and a dict
output. The strategies alternate (`uniform`, `global`). Every corpus network's own path (intake
of its program, the cut, `.pt2` and ONNX back, both strategies) is checked in process by
tests/test_corpus_program.py and tests/test_corpus.py; the REST plumbing around it is the same
for every network, so repeating it for all of them here would add minutes and no check. The
returned `.pt2` loads with `torch.export.load`, keeps the output shape and matches the returned
ONNX; the report's FLOPs meet the target and the groups the engine kept whole are reported, with
a warning event each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from corpus import CORPUS, INPUT_SHAPE, build, exported, shapes, target

from pruning.export import onnx_output_names
from pruning.tasks import named_outputs
from service.client import Client
from service.devserver import ServerProcess

NAMES = ["vgg11_bn", "res2net", "mobilenet_v2", "ghostnet", "densenet", "aux_heads"]
STRATEGY = {name: ("uniform", "global")[i % 2] for i, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def jobs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, corpus_exports: Path) -> Any:
    """A server with the selected corpus programs (all, unless `-k` picks some) uploaded and
    their jobs submitted at once, so they queue together; yields the client, the job ids and a
    folder for downloads."""
    picked = {
        i.callspec.params["name"]
        for i in request.session.items
        if i.module is request.module and hasattr(i, "callspec")
    }
    root = tmp_path_factory.mktemp("corpus_rest")
    # the jobs queue on 2 cores: a worker starting while others run may take longer than the
    # default test server's 10 s to send its first heartbeat; this test is not about that. One
    # evaluation actor per job (the fan-out over several is tests/test_workers_executor.py's and
    # tests/test_ray_cluster.py's): half the actor processes to start, the same REST path
    srv = ServerProcess(root / "data", SECATEURS_STALE_AFTER_SECONDS="300", SECATEURS_EVAL_WORKERS="1")
    try:
        srv.start()
        token = srv.cli("token", "create", "--team", "corpus").stdout.strip().splitlines()[-1]
        client = Client(srv.url, token)
        ids = {}
        for name in (n for n in NAMES if n in picked):
            model = client.upload_model(exported(name, corpus_exports))
            job = client.submit(
                {
                    "model": {"upload": model["id"]},
                    "data": {"name": "synthetic", "input_size": INPUT_SHAPE[-1]},
                    "target": {"flops": target(name)},
                    "strategy": {"name": STRATEGY[name]},
                    "finetune": {"max_steps": 0},
                    "search": {"calibration_batches": 1, "val_batches": 1},
                }
            )
            ids[name] = job["id"]
        yield client, ids, root
    finally:
        srv.stop()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_corpus_network_through_rest(jobs: Any, name: str) -> None:
    client, ids, root = jobs
    done = client.wait(ids[name], poll=0.5, timeout=900)
    assert done["status"] == "succeeded", done.get("error")
    out = root / name
    client.download(ids[name], out)
    report = json.loads((out / "report.json").read_text())
    assert report["strategy"] == STRATEGY[name]
    assert report["flops_after"] <= (target(name) + 0.05) * report["flops_before"]
    pinned = report["pinned_groups"]
    for key, why in pinned.items():
        assert why
        assert report["kept_channels"][key] == report["original_channels"][key]
    warned = {(e.get("data") or {}).get("group") for e in client.events(ids[name]) if e.get("kind") == "warning"}
    assert set(pinned) <= warned
    returned = torch.export.load(str(out / "model.pt2")).module()
    x = torch.randn(3, *INPUT_SHAPE)
    with torch.no_grad():
        y = returned(x)
        assert shapes(y) == shapes(build(name)(x))  # every output, under its name
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x.numpy()}), strict=True))
    names = onnx_output_names(build(name), INPUT_SHAPE)
    assert list(got) == names
    for onnx_name, want in zip(names, named_outputs(y).values(), strict=True):
        torch.testing.assert_close(torch.from_numpy(got[onnx_name]), want, atol=1e-4, rtol=1e-4)
    assert Path(out / "model.safetensors").is_file()


def test_the_rest_set_holds_every_limited_network_and_a_dict_output() -> None:
    assert all(CORPUS[n].classifier for n in NAMES)
    assert {n for n, e in CORPUS.items() if e.limit and e.classifier} <= set(NAMES)
    assert isinstance(build("aux_heads")(torch.zeros(1, *INPUT_SHAPE)), dict)
    assert {STRATEGY[n] for n in NAMES} == {"uniform", "global"}
