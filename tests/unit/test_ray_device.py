"""Where Ray encoder actors run (``--ray-device``), and what a worker's failure says: the choice
itself, no cluster needed (stygig.distributed.cluster imports no Ray)."""

from __future__ import annotations

import pytest

from stygig.distributed.cluster import (
    ClusterResources,
    device_refusal,
    raise_failure,
    worker_failure,
)
from stygig.errors import ArtifactError, ConfigError, EncoderUnavailableError, InvalidOptionsError

ONNX = {"name": "efficientnet-lite0", "runtime": "onnx"}
NUMPY = {"name": "tiny", "runtime": "numpy"}


def test_where_actors_run_follows_the_flag_the_cluster_and_the_encoder() -> None:
    gpus, cpus_only = ClusterResources(cpus=16, gpus=2), ClusterResources(cpus=16, gpus=0)
    assert [gpus.actor_device(d, encoder=ONNX) for d in ("auto", "cpu", "cuda")] == [
        "cuda",
        "cpu",
        "cuda",
    ]
    assert [cpus_only.actor_device(d, encoder=ONNX) for d in ("auto", "cpu")] == ["cpu", "cpu"]
    assert gpus.actor_device("auto", encoder=NUMPY) == "cpu"  # no GPU path: the CPUs
    with pytest.raises(InvalidOptionsError, match="--ray-device cuda: the Ray cluster has no GPUs"):
        cpus_only.actor_device("cuda", encoder=ONNX)
    with pytest.raises(InvalidOptionsError, match="the tiny encoder runs on NumPy"):
        gpus.actor_device("cuda", encoder=NUMPY)
    with pytest.raises(InvalidOptionsError, match="--ray-device must be one of"):
        gpus.actor_device("tpu")
    assert gpus.default_actors(1.0, "cuda") == 2  # one per GPU
    assert gpus.default_actors(4.0, "cpu") == 4  # by the CPUs
    assert cpus_only.default_actors(32.0, "cpu") == 1  # at least one


def test_only_an_encoder_a_gpu_actor_could_not_load_names_the_cpu_flag() -> None:
    no_cuda = EncoderUnavailableError("ONNX Runtime has no CUDA provider here")
    with pytest.raises(EncoderUnavailableError) as caught:
        raise_failure(worker_failure(no_cuda, encoder_load=True), device="cuda")
    assert str(caught.value).startswith("on a Ray worker: ONNX Runtime has no CUDA provider")
    assert "--ray-device cpu" in str(caught.value)
    # On CPU actors, or for anything but loading the encoder, the worker's words alone.
    for text, device in (
        (worker_failure(no_cuda, encoder_load=True), "cpu"),
        (worker_failure(ArtifactError("no artifact at that path on this node")), "cuda"),
    ):
        with pytest.raises((EncoderUnavailableError, ArtifactError)) as caught:
            raise_failure(text, device=device)
        assert "--ray-device" not in str(caught.value)


def test_only_device_refusals_count_as_such() -> None:
    """Loading an encoder can fail for its device (what --ray-device cpu helps with) or for its
    files (a missing or edited ONNX file: the hint would mislead)."""
    assert device_refusal(EncoderUnavailableError("no CUDA provider"))
    assert device_refusal(ConfigError("the tiny encoder runs on NumPy, on the CPU"))
    assert not device_refusal(ArtifactError("encoder.onnx does not match its checksum"))
