"""``stygig doctor``: what is *active* here, checked through the real command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from stygig.doctor import diagnose, simd_level
from stygig.encoders.onnx import PROBE_MODEL, active_providers

REPO = Path(__file__).resolve().parents[2]


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stygig.cli", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )


def _check(report: dict[str, object], name: str) -> dict[str, str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return next(c for c in checks if c["name"] == name)


@pytest.mark.slow  # runs the CLI in a subprocess: not in test-fast
def test_json_lists_the_cpu_provider_active_and_cuda_not() -> None:
    done = _doctor("--json", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    ort = report["onnxruntime"]
    assert ort["active_providers"]["cpu"] == ["CPUExecutionProvider"]
    assert ort["cuda_active"] is False
    assert _check(report, "onnxruntime cuda")["status"] in ("skip", "warn")
    assert {"python", "stygig", "numpy", "onnxruntime"} <= set(report["versions"])
    assert report["faiss"]["simd_level"]  # e.g. AVX2, AVX512, generic
    assert report["exact_scan"]["code_levels"] in (127, 63)
    assert _check(report, "exact scan")["status"] == "ok"
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # runs the CLI in a subprocess: not in test-fast
def test_device_cuda_fails_here_with_exit_1() -> None:
    done = _doctor("--device", "cuda")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "fail  onnxruntime cuda" in done.stdout
    assert "check(s) failed" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # runs the CLI in a subprocess: not in test-fast
def test_an_artifact_is_verified(sample: tuple[Path, Path], tmp_path: Path) -> None:
    done = _doctor("--artifact", str(sample[1]), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["artifact"]["verified"] is True
    assert report["artifact"]["items"] > 0
    assert _check(report, "artifact")["status"] == "ok"
    # the sample is small: served with the float32 scan, and the report says why
    assert report["artifact"]["exact_scan"]["scan"] == "float32"
    assert "items" in _check(report, "artifact scan")["detail"]

    broken = tmp_path / "artifact"
    shutil.copytree(sample[1], broken)
    items = broken / "items.jsonl"
    items.write_text(items.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    done = _doctor("--artifact", str(broken), "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["artifact"] == {
        "path": str(broken),
        "verified": False,
        "error": "artifact_checksum_mismatch",
    }
    assert "items.jsonl" in _check(report, "artifact")["detail"]


def test_an_onnx_artifact_runs_its_own_encoder(sample: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.integration.test_serve_device import onnx_artifact

    art = onnx_artifact(sample[1], tmp_path / "artifact")
    report = diagnose("cpu", art)
    assert report.ok, report.checks
    assert report.artifact is not None
    assert report.artifact["encoder_active_providers"] == ["CPUExecutionProvider"]
    cuda = diagnose("cuda", art)
    assert not cuda.ok
    assert {c.name for c in cuda.checks if c.status == "fail"} == {
        "onnxruntime cuda",
        "artifact encoder",
    }


def test_an_installed_cuda_provider_that_does_not_start_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """onnxruntime-gpu with mismatched CUDA libraries: listed, but sessions run on the CPU."""
    import onnxruntime

    real = onnxruntime.get_available_providers
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", *real()]
    )
    assert active_providers("cuda") == ["CPUExecutionProvider"]
    on_cpu = diagnose("cpu")
    check = next(c for c in on_cpu.checks if c.name == "onnxruntime cuda")
    assert check.status == "warn" and "did not start" in check.detail
    assert on_cpu.ok  # serving on the CPU is fine...
    on_gpu = diagnose("cuda")
    check = next(c for c in on_gpu.checks if c.name == "onnxruntime cuda")
    assert check.status == "fail" and not on_gpu.ok  # ...serving on the GPU is not


def test_probe_model_is_the_graph_onnx_helper_builds() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7, producer_name="stygig"
    )
    onnx.checker.check_model(model)
    assert model.SerializeToString() == PROBE_MODEL


def test_simd_level_of_older_faiss_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before dynamic dispatch, the loaded library's name says the level."""
    old = types.SimpleNamespace()  # no SIMDConfig
    monkeypatch.delitem(sys.modules, "faiss.swigfaiss_avx512", raising=False)
    monkeypatch.delitem(sys.modules, "faiss.swigfaiss_avx512_spr", raising=False)
    monkeypatch.setitem(sys.modules, "faiss.swigfaiss_avx2", types.ModuleType("x"))
    assert simd_level(old) == "AVX2"
    monkeypatch.delitem(sys.modules, "faiss.swigfaiss_avx2")
    assert simd_level(old) == "generic"
    dispatched = types.SimpleNamespace(
        SIMDConfig=types.SimpleNamespace(get_level_name=lambda: "AVX512")
    )
    assert simd_level(dispatched) == "AVX512"


def test_the_artifact_scan_is_the_engines_choice_for_a_split_flat_index(tmp_path: Path) -> None:
    """A catalogue split by slot into flat parts is searched exhaustively, so the engine scans
    its rows: the doctor says what the engine does (here float32: too few bytes), not that it
    is not an exact catalogue."""
    from stygig.artifact import Artifact
    from stygig.index import PartitionedIndex, is_exhaustive
    from tests.unit.test_artifact import _write

    path = _write(tmp_path / "art", n=40, index_kind="flat", index_params={"partition_by": "slot"})
    index = Artifact.load(path).index
    assert isinstance(index, PartitionedIndex) and is_exhaustive(index)
    report = diagnose(artifact=path)
    detail = next(c.detail for c in report.checks if c.name == "artifact scan")
    assert detail.startswith("float32: 40 items of 8 dimensions"), detail
    assert report.artifact is not None and report.artifact["exact_scan"]["scan"] == "float32"
