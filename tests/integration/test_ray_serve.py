"""``stygig serve --engine ray``: a Ray Serve deployment with ``stygig serve``'s HTTP contract.

A real local Ray cluster (``ray.init``, two CPUs) serves the sample artifact on 127.0.0.1; every
request gets the answer (status and JSON) the plain app gives in-process, and concurrent photo
requests share encoder calls (the same micro-batcher runs in the replica).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import encode, garment_image

ray = pytest.importorskip("ray", reason="Ray is the optional ray extra: pip install 'stygig[ray]'")
pytest.importorskip("ray.serve", reason="Ray Serve is part of the ray extra (ray[serve])")
httpx = pytest.importorskip("httpx")

from tests.integration.ray_fixtures import RAY_MARKS  # noqa: E402
from tests.integration.server_fixtures import free_port  # noqa: E402

pytestmark = RAY_MARKS


@pytest.fixture(scope="module")
def served(sample: tuple[Path, Path]) -> Iterator[dict[str, Any]]:
    """The sample artifact behind Ray Serve on 127.0.0.1, and the same app in-process."""
    from fastapi.testclient import TestClient
    from ray import serve

    from stygig.distributed.ray_serve import start_serve
    from stygig.serving.app import ServerConfig, create_app
    from stygig.serving.batching import BatcherConfig

    _, artifact = sample
    config = ServerConfig(artifact=artifact, batching=BatcherConfig(8, 20.0, 64), threads=4)
    port = free_port()
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        start_serve(config, host="127.0.0.1", port=port, replicas=1, replica_cpus=1.0)
        with TestClient(create_app(config)) as local:
            deadline = time.monotonic() + 60
            while local.get("/ping").status_code != 200:  # the in-process model loads
                assert time.monotonic() < deadline, "the in-process app never became ready"
                time.sleep(0.05)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                yield {"client": client, "local": local, "artifact": artifact}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _same(a: Any, b: Any) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.headers["content-type"] == b.headers["content-type"]
    body_a, body_b = json.loads(a.content), json.loads(b.content)
    for body in (body_a, body_b):
        body.pop("timings_ms", None)
    assert body_a == body_b


def test_ping_is_ready_at_once(served: dict[str, Any]) -> None:
    """The deployment counts as started only when the replica's model is warm."""
    r = served["client"].get("/ping")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "request_args",
    [
        {
            "content": encode(garment_image((30, 60, 160))),
            "headers": {"Content-Type": "image/jpeg"},
        },
        {
            "content": encode(garment_image((200, 40, 40))),
            "headers": {
                "Content-Type": "image/jpeg",
                "X-Amzn-SageMaker-Custom-Attributes": "k=2&mode=similar",
            },
        },
        {"json": {"item_ids": ["__first__"]}},
        {"json": {"item_ids": ["no-such-item"]}},
        {"content": b"not an image at all", "headers": {"Content-Type": "image/jpeg"}},
        {"content": b"{}", "headers": {"Content-Type": "text/plain"}},
        {"json": {"item_ids": ["__first__"], "options": {"k": "many"}}},
    ],
    ids=[
        "photo",
        "photo-options",
        "item",
        "unknown-item",
        "not-an-image",
        "bad-type",
        "bad-option",
    ],
)
def test_invocations_answer_as_the_plain_server(
    served: dict[str, Any], request_args: dict[str, Any]
) -> None:
    if "json" in request_args and request_args["json"]["item_ids"] == ["__first__"]:
        from stygig.artifact import Artifact

        first = Artifact.load(served["artifact"], verify=False).items[0].id
        request_args = {"json": {**request_args["json"], "item_ids": [first]}}
    _same(
        served["client"].post("/invocations", **request_args),
        served["local"].post("/invocations", **request_args),
    )


def test_concurrent_photos_share_encoder_calls(served: dict[str, Any]) -> None:
    """The replica's micro-batcher: 24 photo requests at once need fewer encoder calls."""
    client = served["client"]

    def batches() -> tuple[float, float]:
        text = client.get("/metrics").text
        values = {}
        for line in text.splitlines():
            if line.startswith(("stygig_batch_size_count", "stygig_batch_size_sum")):
                name, value = line.split()[0], line.split()[-1]
                values[name.split("{")[0]] = float(value)
        return values["stygig_batch_size_count"], values["stygig_batch_size_sum"]

    calls0, photos0 = batches()
    photo = encode(garment_image((90, 140, 60)))
    with ThreadPoolExecutor(24) as pool:
        answers = list(
            pool.map(
                lambda _: client.post(
                    "/invocations", content=photo, headers={"Content-Type": "image/jpeg"}
                ),
                range(24),
            )
        )
    assert all(r.status_code == 200 for r in answers)
    calls, photos = batches()
    assert photos - photos0 == 24  # every photo went through the encoder once
    assert calls - calls0 < 24  # ... in fewer calls: some batched together


def test_serve_flags_refuse_what_ray_does_not_carry(tmp_path: Path) -> None:
    import argparse

    from stygig.distributed.command import add_engine_flags
    from stygig.distributed.ray_serve import config_from_args
    from stygig.errors import InvalidOptionsError
    from stygig.serving.command import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    if not any("--engine" in a.option_strings for a in serve._actions):
        add_engine_flags(serve, "serve")
    args = parser.parse_args(["serve", "--engine", "ray", "--jobs-db", str(tmp_path / "j.db")])
    with pytest.raises(InvalidOptionsError, match="asynchronous jobs"):
        config_from_args(args)
    args = parser.parse_args(
        ["serve", "--engine", "ray", "--job-queue", "sqs://q?results=s3://b/p"]
    )
    with pytest.raises(InvalidOptionsError, match="asynchronous jobs"):
        config_from_args(args)  # was accepted and dropped without a word (docs check, s35)
    for flags in (["--replicas", "0"], ["--replica-cpus", "nan"], ["--threads", "-1"]):
        with pytest.raises(SystemExit) as refused:  # a usage error (review, session 49)
            parser.parse_args(["serve", "--engine", "ray", *flags])
        assert refused.value.code == 2
    # Review (session 35): these were accepted and silently did nothing under Ray.
    for flags in (["--head-timeout", "5"], ["--max-connections", "10"]):
        args = parser.parse_args(["serve", "--engine", "ray", *flags])
        with pytest.raises(InvalidOptionsError, match="Ray's HTTP proxy holds the connections"):
            config_from_args(args)
    # ... and these are carried to every replica, with paths a replica can read.
    (tmp_path / "examples").mkdir()
    args = parser.parse_args(
        ["serve", "--engine", "ray", "--artifact", str(tmp_path), "--change-log", "changes",
         "--catalog-photos", "photos", "--examples", str(tmp_path / "examples")]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.catalog is not None
    assert config.catalog.change_log == str(Path("changes").resolve())
    assert config.catalog.photo_prefixes == (str(Path("photos").resolve()),)
    assert config.examples == (tmp_path / "examples").resolve()


def test_a_second_deployment_is_refused_and_leaves_the_running_one(
    served: dict[str, Any], tmp_path: Path
) -> None:
    """Review (session 35): ``stygig serve --engine ray`` joined to a cluster replaced an app
    of its name, printed a port Ray's proxy did not listen on (a running Serve keeps its own),
    and at Ctrl-C shut down Serve with every other team's application."""
    import subprocess
    import sys

    client = served["client"]
    gcs = ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "stygig.cli", "serve", "--engine", "ray", "--address", gcs,
           "--artifact", str(served["artifact"]), "--port", str(free_port())]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "already runs an application named 'stygig'" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert client.get("/ping").status_code == 200  # the running one was left alone
    # Where the proxies listen is read from Serve: its own port passes, another is refused.
    from stygig.distributed.ray_serve import _check_listening
    from stygig.errors import ServerError

    port = client.base_url.port or 0
    _check_listening("127.0.0.1", port)
    other = free_port()
    with pytest.raises(ServerError, match=f"listen on 127.0.0.1:{port}, not 127.0.0.1:{other}"):
        _check_listening("127.0.0.1", other)
