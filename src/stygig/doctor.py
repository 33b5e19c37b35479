"""``stygig doctor``: can this machine (or container) serve, and on which hardware?

::

    stygig doctor                                   # versions, runtimes, SIMD
    stygig doctor --device cuda --artifact /opt/ml/model --json

It reports what is *actually in use*, not what is installed: the ONNX Runtime execution
providers active in a session created here (``get_providers()``; an onnxruntime-gpu whose
CUDA/cuDNN libraries do not match falls back to the CPU with only a log line), the GPU torch
sees, the SIMD level FAISS dispatches to, and, with ``--artifact``, the artifact's integrity
(:func:`~stygig.artifact.verify_files`) and the providers active on its own encoder.

A check is ``ok``, ``warn``, ``skip`` (not applicable here) or ``fail``; the exit status is 1
when any check failed. ``--device cuda`` (default ``$STYGIG_DEVICE``, which the GPU image sets)
makes the GPU checks required.

Every import beyond the standard library happens inside the checks, so a missing or broken
library is a failed check, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from stygig.arguments import encoder_device

__all__ = ["Check", "DoctorReport", "diagnose", "register", "run_doctor"]

#: Distributions whose versions are reported (absent ones are left out).
PACKAGES = (
    "stygig",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "torch",
    "faiss-cpu",
    "faiss-gpu",
    "fastapi",
    "uvicorn",
    "boto3",
    "pillow",
)
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # "ok" | "warn" | "skip" | "fail"
    detail: str


@dataclass
class DoctorReport:
    """Everything ``stygig doctor`` found."""

    device: str
    versions: dict[str, str]
    onnxruntime: dict[str, Any] = field(default_factory=dict)
    torch: dict[str, Any] = field(default_factory=dict)
    faiss: dict[str, Any] = field(default_factory=dict)
    exact_scan: dict[str, Any] = field(default_factory=dict)
    artifact: dict[str, Any] | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No check failed."""
        return all(c.status != "fail" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``--json``)."""
        return {"ok": self.ok, **asdict(self)}


def versions() -> dict[str, str]:
    """Python and the installed versions of :data:`PACKAGES`."""
    out = {"python": f"{platform.python_version()} ({platform.system()} {platform.machine()})"}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _onnxruntime(report: DoctorReport) -> None:
    from stygig.errors import StygigError

    try:
        import onnxruntime as ort
    except ImportError as e:
        report.checks.append(Check("onnxruntime", "fail", f"not importable: {e}"))
        return
    from stygig.encoders.onnx import active_providers

    available = list(ort.get_available_providers())
    info: dict[str, Any] = {
        "version": ort.__version__,
        "available_providers": available,
        "active_providers": {},
        "errors": {},
    }
    report.onnxruntime = info
    try:
        info["active_providers"]["cpu"] = active_providers("cpu")
    except StygigError as e:
        info["errors"]["cpu"] = e.message
        report.checks.append(Check("onnxruntime", "fail", f"no CPU session: {e.message}"))
    else:
        report.checks.append(
            Check(
                "onnxruntime",
                "ok",
                f"{ort.__version__}; cpu session active on {', '.join(info['active_providers']['cpu'])}",
            )
        )
    cuda_active = False
    if _CUDA in available:
        try:
            info["active_providers"]["cuda"] = active_providers("cuda")
            cuda_active = _CUDA in info["active_providers"]["cuda"]
        except StygigError as e:
            info["errors"]["cuda"] = e.message
    info["cuda_active"] = cuda_active
    report.checks.append(_cuda_check(report.device, available, info))


def _cuda_check(device: str, available: list[str], info: dict[str, Any]) -> Check:
    required = device == "cuda"
    if info["cuda_active"]:
        return Check("onnxruntime cuda", "ok", "CUDAExecutionProvider active in a session")
    if _CUDA not in available:
        detail = (
            "no CUDA provider in this ONNX Runtime (the CPU build; the GPU image installs "
            "onnxruntime-gpu)"
        )
        return Check("onnxruntime cuda", "fail" if required else "skip", detail)
    active = info["active_providers"].get("cuda") or []
    detail = (
        "CUDAExecutionProvider is installed but did not start (session runs on "
        f"{', '.join(active) or 'nothing'}): CUDA/cuDNN libraries that do not match this "
        "onnxruntime-gpu build, or no GPU visible; see docs/gpu.md"
    )
    if "cuda" in info["errors"]:
        detail += f" ({info['errors']['cuda']})"
    return Check("onnxruntime cuda", "fail" if required else "warn", detail)


def _torch(report: DoctorReport) -> None:
    try:
        metadata.version("torch")
    except metadata.PackageNotFoundError:
        report.torch = {"installed": False}
        report.checks.append(Check("torch", "skip", "not installed (not needed to serve ONNX)"))
        return
    try:
        import torch
    except Exception as e:  # a broken CUDA build raises OSError, RuntimeError, ...
        report.torch = {"installed": True, "error": str(e)}
        report.checks.append(Check("torch", "warn", f"installed but not importable: {e}"))
        return
    cuda = bool(torch.cuda.is_available())
    report.torch = {
        "installed": True,
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
    }
    where = ", ".join(report.torch["devices"]) if cuda else "CPU only"
    status = "warn" if report.device == "cuda" and not cuda else "ok"
    report.checks.append(Check("torch", status, f"{torch.__version__}; {where}"))


def _faiss(report: DoctorReport) -> None:
    try:
        import faiss
    except ImportError as e:
        report.checks.append(Check("faiss", "fail", f"not importable: {e}"))
        return
    options = faiss.get_compile_options().split()
    level = simd_level(faiss)
    cpu = _cpu_simd(faiss)
    report.faiss = {
        "version": faiss.__version__,
        "compile_options": options,
        "simd_level": level,
        "cpu_supports": cpu,
    }
    status = "warn" if level == "generic" and cpu else "ok"
    detail = f"{faiss.__version__}; SIMD {level}" + (
        f" (this CPU has {', '.join(cpu)})" if status == "warn" else ""
    )
    report.checks.append(Check("faiss", status, detail))


def _exact_scan(report: DoctorReport) -> None:
    """How this CPU runs the int8 scan of exact catalogues (:mod:`stygig.scan`)."""
    from stygig.scan import full_range_codes

    vnni = full_range_codes()
    report.exact_scan = {"vnni": vnni, "code_levels": 127 if vnni else 63}
    detail = (
        "int8 codes use the full range (x86 VNNI sums in 32 bits)"
        if vnni
        else "int8 codes kept within +-63 (no VNNI: ONNX Runtime's AVX2 kernel adds pairs of "
        "products in saturating 16-bit lanes)"
    )
    report.checks.append(Check("exact scan", "ok", detail))


def _artifact_scan(info: dict[str, Any], path: Path) -> Check:
    """How serving will scan this artifact's rows: ``int8`` or ``float32``, and why: the
    engine's own rules (:func:`~stygig.index.is_exhaustive`, :func:`~stygig.scan.choose_scan`)
    on the artifact loaded as serving loads it."""
    from stygig.artifact import Artifact
    from stygig.errors import StygigError
    from stygig.index import is_exhaustive
    from stygig.scan import choose_scan
    from stygig.scoring import ScoringConfig

    try:
        artifact = Artifact.load(path, verify=False)  # its files were verified just before
    except StygigError as e:
        return Check("artifact scan", "fail", e.message)
    if not is_exhaustive(artifact.index):
        reason = f"not an exact catalogue (index {artifact.index.kind}): searched"
        check = None
    else:
        choice = choose_scan(artifact.embeddings, ScoringConfig.load().exact_scan)
        reason, check = choice.reason, choice.check
    info["exact_scan"] = {
        "scan": "float32" if reason else "int8",
        "reason": reason or None,
        "check_sigmas": None if check is None else round(check, 2),
    }
    if reason:
        return Check("artifact scan", "ok", f"float32: {reason}")
    return Check("artifact scan", "ok", f"int8, refined in float32 (check {check:.1f} sigma)")


def simd_level(faiss: Any) -> str:
    """The instruction set FAISS runs with: the dispatched level of a dynamic-dispatch build
    (1.12+), else the optimised library that was loaded (``swigfaiss_avx2``, ...)."""
    config = getattr(faiss, "SIMDConfig", None)
    if config is not None and hasattr(config, "get_level_name"):
        return str(config.get_level_name())
    for suffix in ("avx512_spr", "avx512", "avx2", "sve"):
        if f"faiss.swigfaiss_{suffix}" in sys.modules:
            return suffix.upper()
    return "generic"


def _cpu_simd(faiss: Any) -> list[str]:
    loader = getattr(faiss, "loader", None)
    try:
        found = set(loader.supported_instruction_sets()) if loader is not None else set()
    except Exception:  # probing the CPU must never fail the report
        return []
    return sorted(x for x in found if x in {"AVX2", "AVX512F", "AVX512_SPR", "SVE", "NEON"})


def _artifact(report: DoctorReport, path: Path) -> None:
    from stygig.artifact import ONNX_FILE, encoder_pooling, read_manifest, verify_files
    from stygig.encoders.onnx import active_providers, check_active
    from stygig.errors import StygigError

    try:
        manifest = read_manifest(path)
        verify_files(path, manifest)
        pooling = encoder_pooling(_mapping(manifest.get("encoder")))
    except StygigError as e:
        report.artifact = {"path": str(path), "verified": False, "error": e.code}
        report.checks.append(Check("artifact", "fail", e.message))
        return
    encoder = _mapping(manifest.get("encoder"))
    counts = _mapping(manifest.get("counts"))
    info: dict[str, Any] = {
        "path": str(path),
        "verified": True,
        "format_version": manifest.get("format_version"),
        "encoder": {
            **{k: encoder.get(k) for k in ("name", "dim", "runtime", "quantization")},
            "pooling": pooling,
        },
        "items": counts.get("items"),
        "built_with": manifest.get("versions"),
    }
    report.artifact = info
    report.checks.append(
        Check(
            "artifact",
            "ok",
            f"checksums ok; {counts.get('items')} items; encoder {encoder.get('name')} "
            f"({encoder.get('runtime')}{f', {pooling} pooling' if pooling else ''})",
        )
    )
    report.checks.append(_artifact_scan(info, path))
    if encoder.get("runtime") != "onnx":
        return
    onnx_file = path / str(encoder.get("onnx_file") or ONNX_FILE)  # confined by verify_files
    try:
        active = active_providers(report.device, onnx_file)
        info["encoder_active_providers"] = active
        check_active(active, report.device)
    except StygigError as e:
        report.checks.append(Check("artifact encoder", "fail", e.message))
        return
    report.checks.append(
        Check("artifact encoder", "ok", f"session on its encoder runs on {', '.join(active)}")
    )


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def diagnose(device: str = "cpu", artifact: Path | None = None) -> DoctorReport:
    """Run every check for ``device`` (``"cpu"`` or ``"cuda"``), and the artifact's if given."""
    report = DoctorReport(device=device, versions=versions())
    report.checks.append(Check("python", "ok", report.versions["python"]))
    _onnxruntime(report)
    _torch(report)
    _faiss(report)
    _exact_scan(report)
    if artifact is not None:
        _artifact(report, Path(artifact))
    return report


def register(subparsers: Any) -> None:
    """Add ``doctor`` to ``stygig``'s argparse subparsers."""
    p = subparsers.add_parser(
        "doctor", help="check versions, ONNX Runtime providers, GPU, FAISS SIMD and an artifact"
    )
    p.add_argument("--artifact", help="also verify this artifact and run its encoder's session")
    p.add_argument(
        "--device",
        type=encoder_device,
        metavar="{cpu,cuda}",
        default=os.environ.get("STYGIG_DEVICE", "cpu"),
        help="the device serving will use; cuda makes the GPU checks required "
        "(default $STYGIG_DEVICE or cpu)",
    )
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    """Print the report; 1 when a check failed."""
    report = diagnose(args.device, Path(args.artifact) if args.artifact else None)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"stygig doctor (device {report.device})")
        for check in report.checks:
            print(f"  {check.status:<5} {check.name:<17} {check.detail}")
        failed = sum(c.status == "fail" for c in report.checks)
        print("all checks passed" if not failed else f"{failed} check(s) failed")
    return 0 if report.ok else 1
