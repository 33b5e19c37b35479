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


@pytest.mark.slow
def test_json_output_keeps_ray_worker_lines_off_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review (session 35): with ``--json`` a dead worker's notice, printed by Ray on stdout,
    came before the summary and ``json.loads(stdout)`` failed. The session started for a
    ``--json`` batch does not forward the workers' lines; others still do."""
    import argparse
    import contextlib
    from collections.abc import Iterator
    from types import SimpleNamespace
    from typing import Any

    pytest.importorskip("ray.data", reason="Ray is the optional ray extra")
    from stygig.distributed import cluster, command, ray_batch
    from stygig.jobs import command as jobs_command

    inits: list[dict[str, Any]] = []
    fake = SimpleNamespace(
        is_initialized=lambda: False,
        init=lambda **kw: inits.append(kw),
        shutdown=lambda: None,
    )
    monkeypatch.setattr(cluster, "import_ray", lambda: fake)
    with cluster.ray_session(None, num_cpus=2):
        pass
    with cluster.ray_session(None, num_cpus=2, worker_logs=False):
        pass
    assert [kw["log_to_driver"] for kw in inits] == [True, False]

    sessions: list[bool] = []

    @contextlib.contextmanager
    def session(address: str | None, *, worker_logs: bool = True) -> Iterator[None]:
        sessions.append(worker_logs)
        yield

    monkeypatch.setattr(cluster, "ray_session", session)
    monkeypatch.setattr(ray_batch, "run_batch_ray", lambda *a, **kw: "summary")
    monkeypatch.setattr(jobs_command, "batch_source", lambda args: ("in.jsonl", "auto"))
    flags = dict(
        endpoint_name=None, artifact="art", ray_actors=None, ray_actor_cpus=1.0, batch_size=8,
        address=None, output="out.jsonl", by_photo=False, overwrite=False, no_verify=False,
        quiet=True, ray_device="auto",
    )  # fmt: skip
    for json_out in (True, False):
        args = argparse.Namespace(json_out=json_out, **flags)
        assert command.run_batch_ray_command(args, {}) == "summary"
    assert sessions == [False, True]
