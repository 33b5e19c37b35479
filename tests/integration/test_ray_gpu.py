"""``--ray-device`` on a real local Ray cluster that declares a GPU.

``ray.init(num_gpus=1)`` gives the cluster a GPU resource that this machine does not have, so
the GPU branch of ``stygig build|batch --engine ray`` runs as on a GPU cluster up to the model
load: actors reserve the GPU and load the encoder for CUDA. Here that load fails (ONNX Runtime
has no CUDA provider), which must be a clear error naming ``--ray-device cpu``; with
``--ray-device cpu`` the same cluster builds and batches on its CPUs, as the local engine does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is the optional ray extra: pip install 'stygig[ray]'")
pytest.importorskip("ray.data", reason="Ray Data is part of the ray extra (ray[data])")
ort = pytest.importorskip("onnxruntime")

from stygig.artifact import Artifact  # noqa: E402
from stygig.errors import EncoderUnavailableError  # noqa: E402
from tests.integration.ray_fixtures import RAY_MARKS, local_ray  # noqa: E402

pytestmark = RAY_MARKS

CUDA_HERE = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[None]:
    with local_ray(num_gpus=1):
        yield


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The drawn sample catalogue and efficientnet-lite0 exported to ONNX once, as builds do."""
    pytest.importorskip("torch")
    from stygig.build import make_build_encoder
    from stygig.sample_catalog import generate_sample_catalog

    csv = generate_sample_catalog(tmp_path_factory.mktemp("sample") / "catalog")
    with make_build_encoder("efficientnet-lite0") as (enc, files):
        yield {"csv": csv, "encoder": enc, "files": files}


def _build(encoder: dict[str, Any], out: Path, device: str) -> Any:
    from stygig.distributed.ray_build import build_artifact_ray

    return build_artifact_ray(
        encoder["csv"],
        out,
        encoder["encoder"],
        extra_files=encoder["files"],
        batch_size=32,
        progress=False,
        device=device,
    )


@pytest.mark.skipif(CUDA_HERE, reason="this machine has CUDA: the GPU actors would load")
def test_gpu_actors_without_cuda_are_a_clear_error(
    gpu_cluster: None, encoder: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(EncoderUnavailableError) as caught:
        _build(encoder, tmp_path / "art", "auto")  # auto: the cluster has a GPU
    message = str(caught.value)
    assert "on a Ray worker" in message and "no CUDA provider" in message
    assert "each encoder actor had a GPU; --ray-device cpu" in message
    assert "Traceback" not in message
    assert not (tmp_path / "art" / "manifest.json").exists()


def test_ray_device_cpu_builds_and_batches_on_a_gpu_cluster(
    gpu_cluster: None, encoder: dict[str, Any], tmp_path: Path
) -> None:
    from stygig.batch import run_batch
    from stygig.build import build_artifact
    from stygig.distributed.ray_batch import run_batch_ray
    from stygig.engine import Recommender

    on_ray = _build(encoder, tmp_path / "ray", "cpu")
    info = on_ray.manifest["build"]["ray"]
    assert info["device"] == "cpu" and info["cluster"]["gpus"] == 1
    assert info["actors"] == 2  # by the CPUs, not one per GPU
    local = build_artifact(
        encoder["csv"],
        tmp_path / "local",
        encoder["encoder"],
        extra_files=encoder["files"],
        progress=False,
    )
    a, b = Artifact.load(local.path), Artifact.load(on_ray.path)
    assert [i.id for i in a.items] == [i.id for i in b.items]
    assert np.abs(np.asarray(a.embeddings) - np.asarray(b.embeddings)).max() < 1e-5

    queries = str(Path(encoder["csv"]).parent / "queries")
    want = run_batch(Recommender.from_path(local.path), queries, str(tmp_path / "l.jsonl"))
    got = run_batch_ray(
        on_ray.path, queries, str(tmp_path / "r.jsonl"), batch_size=2, progress=False, device="cpu"
    )
    assert (got.total, got.processed, got.errors) == (want.total, want.processed, want.errors)
    assert got.processed > 0


def test_a_numpy_encoder_runs_on_the_cpus_of_a_gpu_cluster(
    gpu_cluster: None, tmp_path: Path
) -> None:
    """auto gives GPUs only to encoders that can use one: the tiny NumPy encoder builds on the
    CPUs of a GPU cluster (and is refused a GPU when asked for one, before any work)."""
    from stygig.encoders import load_encoder
    from stygig.errors import InvalidOptionsError
    from stygig.sample_catalog import generate_sample_catalog

    csv = generate_sample_catalog(tmp_path / "catalog")
    tiny = {"csv": csv, "encoder": load_encoder("tiny"), "files": {}}
    built = _build(tiny, tmp_path / "auto", "auto")
    assert built.manifest["build"]["ray"]["device"] == "cpu"
    with pytest.raises(InvalidOptionsError, match="the tiny encoder runs on NumPy"):
        _build(tiny, tmp_path / "cuda", "cuda")
    assert not (tmp_path / "cuda").exists() and not (tmp_path / "cuda.ray-parts").exists()
