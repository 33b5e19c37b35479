"""Start-up warms the path a concurrent request takes: the micro-batcher and its encoder thread
have run before ``/ping`` says ready, and a failure there is reported like any warm-up failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from stygig.errors import EncoderUnavailableError
from stygig.serving.app import ModelService, ServerConfig, create_app

pytestmark = pytest.mark.slow


def _until(condition: Callable[[], bool], seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_batcher_has_run_once_when_the_server_is_ready(sample: tuple[Path, Path]) -> None:
    from fastapi.testclient import TestClient

    app = create_app(ServerConfig(artifact=sample[1], warmup_rounds=1, threads=2))
    service: ModelService = app.state.service
    with TestClient(app) as client:
        assert _until(lambda: client.get("/ping").status_code == 200)
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
        assert _until(lambda: bool(failed))
        assert client.get("/ping").status_code != 200
    assert isinstance(failed[0], EncoderUnavailableError)
    assert str(failed[0]) == "the encoder failed to run" and failed[0].exit_code == 5
