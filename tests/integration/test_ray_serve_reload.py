"""``stygig serve --engine ray`` with two replicas: a reload reaches every replica, whether one
replica takes ``POST /v1/catalog/reload`` or the driver gets SIGHUP (review, session 53: the
POST reloaded the one replica that took it, half the answers stayed on the old version with
no end, and SIGHUP ended the whole deployment)."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from tests.integration.ray_fixtures import RAY_MARKS
from tests.integration.server_fixtures import (
    exit_code,
    free_port,
    start_process,
    until,
    wait_ready,
)

pytest.importorskip("ray", reason="Ray is the optional ray extra: pip install 'stygig[ray]'")
pytest.importorskip("ray.serve", reason="Ray Serve is part of the ray extra (ray[serve])")
httpx = pytest.importorskip("httpx")

pytestmark = RAY_MARKS


def test_a_reload_reaches_every_replica(sample: tuple[Path, Path], tmp_path: Path) -> None:
    from stygig.cli import main

    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    shutil.copytree(sample[1], v1)
    first = json.loads((v1 / "items.jsonl").read_text().splitlines()[0])["id"]
    log = str(tmp_path / "log")
    assert main(["catalog", "remove", "--artifact", str(v1), "--change-log", log, first]) == 0
    args = ["catalog", "compact", "--artifact", str(v1), "--change-log", log, "--out", str(v2)]
    assert main(args) == 0
    new = json.loads((v2 / "manifest.json").read_text())["version"]
    pointer = tmp_path / "serve-this"
    pointer.write_text(str(v1))
    port = free_port()
    flags = [
        *("serve", "--engine", "ray", "--artifact", str(v1), "--host", "127.0.0.1"),
        *("--port", str(port), "--replicas", "2", "--replica-cpus", "0.5"),
        # Reloads come from the POST and SIGHUP only: the pointer is not polled meanwhile.
        *("--watch", str(pointer), "--watch-interval", "3600"),
    ]
    out = tmp_path / "serve.log"
    process = start_process(flags, out)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, timeout=600)
        with httpx.Client(base_url=url, timeout=60) as client:

            def versions() -> set[str]:
                """The versions 20 reads through the one URL saw (both replicas answer)."""
                return {
                    client.get("/v1/catalog/version").json()["artifact_version"] for _ in range(20)
                }

            (old,) = versions()  # one version, v1's
            assert old != new
            pointer.write_text(str(v2))
            r = client.post("/v1/catalog/reload")
            assert r.status_code == 200, r.text
            assert until(lambda: versions() == {new}, 60), versions()
            # SIGHUP, as for stygig serve: every replica, and the deployment stays.
            pointer.write_text(str(v1))
            process.send_signal(signal.SIGHUP)
            assert until(lambda: versions() == {old}, 60), versions()
            assert process.poll() is None
            assert client.get("/ping").status_code == 200
    finally:
        process.terminate()
        code = exit_code(process, timeout=120)
    assert code == 0, out.read_text()[-3000:]
