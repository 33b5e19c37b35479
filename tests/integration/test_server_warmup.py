"""Start-up warms the path a concurrent request takes: the micro-batcher and its encoder thread
have run before ``/ping`` says ready, and a failure there is reported like any warm-up failure.
A version the server refused to reload is not loaded again by its watch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stygig.errors import EncoderUnavailableError
from stygig.serving.app import ModelService, ServerConfig, create_app
from tests.integration.server_fixtures import until

pytestmark = pytest.mark.slow


def test_the_batcher_has_run_once_when_the_server_is_ready(sample: tuple[Path, Path]) -> None:
    from fastapi.testclient import TestClient

    app = create_app(ServerConfig(artifact=sample[1], warmup_rounds=1, threads=2))
    service: ModelService = app.state.service
    with TestClient(app) as client:
        assert until(lambda: client.get("/ping").status_code == 200)
        # No request yet: the one batch is the warm-up's, encoded in the batcher's own thread.
        assert service.batcher.batches == 1
        assert service.batcher.running


def test_a_failing_batcher_at_warm_up_is_reported_as_before(
    sample: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    def broken(self: ModelService, tensors: list[np.ndarray]) -> np.ndarray:
        raise EncoderUnavailableError("the encoder failed to run")

    # Only the batcher calls ModelService._embed; a lone request embeds in the pool.
    monkeypatch.setattr(ModelService, "_embed", broken)
    failed: list[BaseException] = []
    app = create_app(
        ServerConfig(artifact=sample[1], warmup_rounds=1, threads=2), on_fatal=failed.append
    )
    with TestClient(app) as client:
        assert until(lambda: bool(failed))
        assert client.get("/ping").status_code != 200
    assert isinstance(failed[0], EncoderUnavailableError)
    assert str(failed[0]) == "the encoder failed to run" and failed[0].exit_code == 5


def test_the_watch_does_not_reload_a_refused_version_again_and_again(
    sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hole: a watched pointer naming a version the server refuses (another encoder) made it
    load that version again every interval (CPU x12 at rest on a tiny artifact). A refused
    version is tried again only on an explicit reload (SIGHUP, POST) or once it changes."""
    import functools
    import json
    import shutil

    from fastapi.testclient import TestClient

    from stygig.serving.app import ReloadRefusedError

    art = tmp_path / "artifact"
    shutil.copytree(sample[1], art)
    loads: list[Path] = []

    async def refuse(self: ModelService, path: Path, current: object) -> None:
        loads.append(path)
        refused = ReloadRefusedError("the new artifact has another encoder: restart the server")
        refused.lasting = len(loads) > 1  # the first: files still arriving (tried again)
        raise refused

    monkeypatch.setattr(ModelService, "_load_new", refuse)
    app = create_app(ServerConfig(artifact=art, warmup_rounds=1, threads=2))
    service: ModelService = app.state.service
    with TestClient(app) as client:
        assert until(lambda: client.get("/ping").status_code == 200)
        manifest = json.loads((art / "manifest.json").read_text())
        (art / "manifest.json").write_text(json.dumps({**manifest, "version": "next"}))
        watched = functools.partial(service.reload, watched=True)
        with pytest.raises(ReloadRefusedError):  # a passing refusal (1): tried again later
            client.portal.call(watched)  # type: ignore[union-attr]
        # Not at every tick (review, session 49: each re-read and re-hashed every file): it
        # waits, from the watch interval up, doubling. Here the wait is made to be over.
        assert client.portal.call(watched) is False  # type: ignore[union-attr]
        assert len(loads) == 1
        assert service._retry is not None
        path, version, _, wait = service._retry
        assert wait == 1.0  # no watch configured here: a second
        service._retry = (path, version, 0.0, wait)
        with pytest.raises(ReloadRefusedError):  # then a lasting one (2)
            client.portal.call(watched)  # type: ignore[union-attr]
        assert client.portal.call(watched) is False  # type: ignore[union-attr]
        assert len(loads) == 2
        with pytest.raises(ReloadRefusedError):
            client.portal.call(service.reload)  # type: ignore[union-attr]
        assert len(loads) == 3
        (art / "manifest.json").write_text(json.dumps({**manifest, "version": "after"}))
        with pytest.raises(ReloadRefusedError):
            client.portal.call(watched)  # type: ignore[union-attr]
        assert len(loads) == 4
