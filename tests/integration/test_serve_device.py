"""``stygig serve --device cuda`` refuses to start when the CUDA provider is not active.

No GPU here, so two ways the GPU path fails are run for real:

* this machine's ONNX Runtime (the CPU build) has no CUDA provider at all;
* an onnxruntime-gpu whose CUDA/cuDNN libraries do not match: the provider is *listed* but
  the session silently runs on the CPU. Simulated by making ``get_available_providers()``
  list CUDA: a real session asked for it then runs on ``CPUExecutionProvider`` only, which is
  exactly what ONNX Runtime does on a mismatched machine.

In both, the process must exit with the encoder error (5) and a message, before it binds its
port (uvicorn never says it is running), and never with a traceback.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stygig.artifact import file_sha256, read_manifest
from stygig.encoders.onnx import ONNX_INPUT, ONNX_OUTPUT, check_active, load_onnx_encoder
from stygig.errors import EncoderUnavailableError
from tests.integration.server_fixtures import REPO, free_port

# The CLI with ONNX Runtime pretending to have the CUDA provider (see the module docstring).
_FAKE_GPU = """
import sys
import onnxruntime
real = onnxruntime.get_available_providers
onnxruntime.get_available_providers = lambda: ["CUDAExecutionProvider", *real()]
from stygig.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write_encoder_onnx(path: Path, size: int, dim: int) -> None:
    """A small ONNX encoder: mean colour per channel, projected to ``dim`` (needs ``onnx``)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.RandomState(0).standard_normal((3, dim)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [ONNX_INPUT], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], [ONNX_OUTPUT]),
        ],
        "encoder",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, ["n", dim])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def onnx_artifact(source: Path, dest: Path) -> Path:
    """A copy of the tiny sample artifact whose encoder is an ONNX file (checksums updated)."""
    shutil.copytree(source, dest)
    manifest = read_manifest(dest)
    encoder = manifest["encoder"]
    onnx_file = dest / "encoder.onnx"
    write_encoder_onnx(onnx_file, int(encoder["preprocess"]["size"]), int(encoder["dim"]))
    sha = file_sha256(onnx_file)
    encoder.update(runtime="onnx", onnx_file="encoder.onnx", onnx_sha256=sha)
    manifest["files"]["encoder.onnx"] = {"sha256": sha, "bytes": onnx_file.stat().st_size}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def onnx_art(sample: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_artifact(sample[1], tmp_path_factory.mktemp("onnx-art") / "artifact")


def _serve(artifact: Path, *extra: str, fake_gpu: bool = False) -> tuple[int, str, int]:
    """Run ``stygig serve --device cuda``; (exit code, its output, the port it was given)."""
    port = free_port()
    code = ["-c", _FAKE_GPU] if fake_gpu else ["-m", "stygig.cli"]
    args = ["serve", "--artifact", str(artifact), "--port", str(port), "--device", "cuda", *extra]
    done = subprocess.run(
        [sys.executable, *code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    return done.returncode, done.stdout + done.stderr, port


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _refused_before_binding(output: str, port: int) -> None:
    assert "Traceback" not in output
    assert "Uvicorn running" not in output and "Application startup" not in output
    assert "model ready" not in output
    assert _port_free(port)


def test_no_cuda_provider_refuses_to_start(onnx_art: Path) -> None:
    code, output, port = _serve(onnx_art)
    assert code == 5, output
    assert "stygig: error: ONNX Runtime has no CUDA provider here" in output
    _refused_before_binding(output, port)


def test_cuda_provider_that_does_not_start_refuses_to_start(onnx_art: Path) -> None:
    code, output, port = _serve(onnx_art, fake_gpu=True)
    assert code == 5, output
    assert "CUDA provider did not start (active providers: CPUExecutionProvider)" in output
    assert "stygig doctor --device cuda" in output
    _refused_before_binding(output, port)


def test_an_encoder_without_a_gpu_path_is_refused(sample: tuple[Path, Path]) -> None:
    code, output, port = _serve(sample[1])  # the tiny encoder runs on NumPy
    assert code == 5, output
    assert "nothing would run on the GPU" in output
    _refused_before_binding(output, port)


def test_the_encoder_itself_refuses_a_silent_cpu_fallback(
    onnx_art: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the start-up check: an encoder session that left the GPU is an error too."""
    import onnxruntime

    real = onnxruntime.get_available_providers
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", *real()]
    )
    info = read_manifest(onnx_art)["encoder"]
    with (
        pytest.warns(UserWarning, match="not in available provider names"),
        pytest.raises(EncoderUnavailableError) as caught,
    ):
        load_onnx_encoder(onnx_art / "encoder.onnx", info, device="cuda")
    assert caught.value.code == "cuda_inactive"
    # The same file on the CPU works, and says so.
    encoder = load_onnx_encoder(onnx_art / "encoder.onnx", info, device="cpu")
    assert encoder.session.get_providers() == ["CPUExecutionProvider"]
    assert encoder.encode(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, int(info["dim"]))


def test_check_active() -> None:
    check_active(["CPUExecutionProvider"], "cpu")
    check_active(["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda")
    with pytest.raises(EncoderUnavailableError) as caught:
        check_active(["CPUExecutionProvider"], "cuda")
    assert caught.value.code == "cuda_inactive" and caught.value.exit_code == 5
