"""ONNX export (fp32 or int8) and the ONNX Runtime backend: the serving path without torch.

Export uses torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, needs onnxscript)
with a batch-2 example and a dynamic batch dimension, so one file serves any batch size. The file
carries ``stygig.*`` metadata (encoder name, quantization) and is checked after export: batch 1
and 5 run, and fp32 output matches torch.

int8 differs by architecture, because what works for one fails the other (measured on 2 AVX-512
VNNI cores by ``benchmarks/bench_quantization.py``; results in ``benchmarks/results``):

* transformers (CLIP): ``quantize_dynamic`` with int8 weights on MatMul/Gemm only. The dynamo
  graph quantizes as is (``quant_pre_process`` only slowed it down here). Convolutions are left
  fp32: ORT's dynamic ``ConvInteger`` with int8 weights is slow, and the patch embedding is one op.
  Static QDQ took 0.99-1.04x the dynamic model's time at batch 1 and was 1.06-1.11x faster at
  batch 32 (two runs), but moved embeddings to cosine 0.85 of fp32 (random weights; dynamic:
  0.9998), so CLIP stays dynamic. Fused attention did not pay either: exported with eager
  attention by the TorchScript exporter, ORT's transformer optimizer fuses all 12 ``Attention``
  blocks (it finds none in the dynamo graph), but the int8 model ran 1.12x slower at batch 1
  with the attention quantized too and 1.51x slower with it fp32 (interleaved, busy cores).
  With the tower written for the export (:func:`stygig.encoders.clip._image_tower`), the
  attention core alone as one ORT ``MultiHeadAttention`` per layer (graph surgery) or as the
  opset-23 ``Attention`` that ``scaled_dot_product_attention`` exports to took 0.94-0.98x
  the time of the plain products, within run-to-run noise: not adopted.
* CNNs (EfficientNet-Lite0): ``quantize_static`` (QDQ, per-channel int8 weights, uint8
  activations, MinMax calibration) after ``quant_pre_process``. With the real weights, on 1,322
  held-out Kaggle photos: batch 1 in 0.52x the fp32 time, mean cosine 0.995 to fp32, top-5
  category votes within 0.5 point of fp32's. ORT's dynamic int8 (every op, ``ConvInteger``)
  ran 3-11x *slower* than fp32 at mean cosine 0.87-0.91.

Static calibration uses :class:`~stygig.encoders.calibration.Calibration` images: a build passes
64 of its own catalogue photos (:func:`~stygig.encoders.calibration.catalogue_calibration`) and
the manifest's ``quantization_method`` says ``calibration: 64 catalogue images``; without photos,
seeded synthetic shapes. On the Kaggle photos both gave the same drift (mean cosine 0.9948 vs
0.9948) and votes, so the fallback costs nothing measurable; catalogue photos are preferred
because they are the images the model will actually see.

:class:`OnnxEncoder` imports only ``onnxruntime`` and NumPy; it is rebuilt from the manifest's
``describe()`` dictionary plus the ``.onnx`` file by :func:`load_onnx_encoder`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stygig.encoders.base import (
    Encoder,
    TorchEncoder,
    check_batch,
    l2_normalize,
    missing_extra,
    preprocess_from_dict,
    sha256_file,
)
from stygig.encoders.calibration import Calibration
from stygig.errors import ConfigError, EncoderUnavailableError
from stygig.images import PreprocessSpec
from stygig.scan import full_range_codes

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "ONNX_INPUT",
    "ONNX_OUTPUT",
    "PROBE_MODEL",
    "OnnxEncoder",
    "active_providers",
    "check_active",
    "export_onnx",
    "load_onnx_encoder",
    "session_options",
    "synthetic_calibration",
]

ONNX_INPUT = "pixel_values"
ONNX_OUTPUT = "stygig_embedding"  # "embedding" collides with a node name inside the CLIP graph
_META = "stygig."
_INT8_METHODS = ("dynamic", "static")


def session_options(
    threads: int | None = None, *, spinning: bool = False
) -> onnxruntime.SessionOptions:
    """ONNX Runtime options: all graph optimisations, the CPU arena, no memory pattern.

    Measured on 2 shared AVX-512 VNNI cores with the int8 serving models
    (``benchmarks/bench_quantization.py``, interleaved medians):

    * graph optimisation ``ORT_ENABLE_ALL``: it fuses the static int8 QDQ pairs into integer
      kernels; EfficientNet-Lite0 int8 at batch 1 ran 1.26x slower with ``EXTENDED`` and 5.4x
      slower with ``BASIC`` (CLIP int8: 1.01x / 1.06x).
    * memory pattern off: ORT plans and caches an allocation pattern per input shape, so memory
      grows with every new batch size, and micro-batching sends many. Over two sweeps of batch
      sizes 1-32, CLIP int8 grew to 402 MB with it and stayed at 340 MB without
      (EfficientNet-Lite0: 205 vs 190 MB); latency at batch 1, 8 and mixed sizes moved within
      5 % either way, i.e. within noise.
    * CPU memory arena on (ORT's default): without it no latency improved and the peak was no
      lower (EfficientNet-Lite0 218 vs 190 MB); the arena stays flat once the largest batch ran.
    * threads: all cores by default. EfficientNet-Lite0 at batch 1: 2 threads 3.2 ms, 1 thread
      4.4 ms; beside a second process running the same model, 2 threads were 1.1-1.2x faster for
      CLIP and within 7 % either way for EfficientNet-Lite0, so one default serves both.

    Args:
        threads: intra-op threads; default ``os.cpu_count()``.
        spinning: let idle worker threads busy-wait for the next run. Off by default: it
            saves a little latency only when the cores are the session's alone, and otherwise
            burns the cores that image decoding, the HTTP server or neighbouring processes need.
            Measured 2026-12-01 on ViT-B/32 int8, batch 1, 2 threads: alone, interleaved, 22.4
            -> 17.8 ms; behind ``stygig serve`` (a ``--encoder-spinning`` flag tried, one
            server at a time, A B A B, load ~2) the server's encoder step 22.3 / 21.9 -> 22.2 /
            22.6 ms and client p50 26.9 / 26.3 -> 28.1 / 31.7 ms, CPU per request +8 to +15
            ms: no gain over HTTP, so the flag was not kept.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: ORT's graph-rewrite warnings are not ours
    return options


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EncoderUnavailableError(
                "ONNX Runtime has no CUDA provider here "
                f"(available: {', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu on a machine with CUDA, or use device='cpu'",
                code="cuda_unavailable",
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(f"unknown device {device!r}; use 'cpu' or 'cuda'")


#: A one-node ONNX graph (``Identity``, float[1] -> float[1], opset 13, IR 7), serialised by
#: ``onnx.helper`` (``tests/unit/test_doctor.py`` rebuilds it and compares): a session on it
#: shows which execution providers actually start, without the ``onnx`` package or a model file.
PROBE_MODEL = (
    b'\x08\x07\x12\x06stygig:;\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x05probeZ\x0f\n\x01x'
    b"\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01"
    b"B\x04\n\x00\x10\r"
)


def check_active(active: list[str], device: str) -> None:
    """Refuse a session that silently left the GPU.

    ONNX Runtime falls back to the CPU, with a log line and no error, when the CUDA provider
    is listed but cannot start (CUDA or cuDNN libraries that do not match the onnxruntime-gpu
    build, no GPU visible). ``active`` is the session's ``get_providers()``.

    Raises:
        EncoderUnavailableError: ``cuda_inactive``, when ``device`` is ``"cuda"`` and the CUDA
            provider is not among ``active``.
    """
    if device == "cuda" and "CUDAExecutionProvider" not in active:
        raise EncoderUnavailableError(
            "ONNX Runtime's CUDA provider did not start (active providers: "
            f"{', '.join(active) or 'none'}): the CUDA/cuDNN libraries do not match this "
            "onnxruntime-gpu build, or no GPU is visible; `stygig doctor --device cuda` says "
            "which (see docs/gpu.md), or use --device cpu",
            code="cuda_inactive",
        )


def active_providers(device: str, model: Path | bytes = PROBE_MODEL) -> list[str]:
    """The execution providers ONNX Runtime actually runs a session on ``model`` with.

    ``get_available_providers()`` lists what the installed build contains; only a session
    shows what starts on this machine. Default model: :data:`PROBE_MODEL` (milliseconds).

    Raises:
        EncoderUnavailableError: onnxruntime is missing, the device has no provider at all,
            or the session cannot be created.
        ConfigError: an unknown device.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise EncoderUnavailableError(
            f"onnxruntime is not installed ({e}); `pip install onnxruntime`"
        ) from e
    providers = _providers(device)
    source = model if isinstance(model, bytes) else str(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "not in available provider names"
            session = ort.InferenceSession(
                source, sess_options=session_options(1), providers=providers
            )
    except (RuntimeError, ValueError) as e:
        raise EncoderUnavailableError(f"ONNX Runtime cannot create a {device} session: {e}") from e
    return list(session.get_providers())


class OnnxEncoder:
    """An encoder run by ONNX Runtime from an exported ``.onnx`` file.

    Args:
        path: the ``.onnx`` file.
        info: the source encoder's ``describe()`` dictionary (name, dim, preprocess, weights).
        threads: intra-op threads; default all cores.
        device: ``"cpu"`` or ``"cuda"`` (needs onnxruntime-gpu).
        spinning: see :func:`session_options`.

    Raises:
        EncoderUnavailableError: onnxruntime is missing, or the file does not match ``info``.
    """

    runtime = "onnx"

    def __init__(
        self,
        path: Path,
        info: Mapping[str, Any],
        *,
        threads: int | None = None,
        device: str = "cpu",
        spinning: bool = False,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise EncoderUnavailableError(
                f"onnxruntime is not installed ({e}); `pip install onnxruntime`"
            ) from e
        self.path = Path(path)
        if not self.path.is_file():
            raise EncoderUnavailableError(f"ONNX model not found: {self.path}")
        try:
            self.session = ort.InferenceSession(
                str(self.path),
                sess_options=session_options(threads, spinning=spinning),
                providers=_providers(device),
            )
        except (RuntimeError, ValueError) as e:  # ORT raises its own RuntimeError subclasses
            raise EncoderUnavailableError(f"ONNX Runtime cannot load {self.path}: {e}") from e
        check_active(self.session.get_providers(), device)
        self.device = device
        self.name = str(info["name"])
        self.dim = int(info["dim"])
        self.preprocess: PreprocessSpec = preprocess_from_dict(info["preprocess"])
        self._info = dict(info)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.quantization: str | None = meta.get(_META + "quantization") or None
        self.quantization_method: str | None = meta.get(_META + "quantization_method") or None
        recorded = info.get("pooling")
        #: the graph's pooling (EfficientNet): its stamp, else the manifest's record; ``None``
        #: for a graph exported before either existed (average-pooled) or without the choice
        self.pooling: str | None = meta.get(_META + "pooling") or (
            recorded if isinstance(recorded, str) else None
        )
        self._check(meta.get(_META + "encoder"), meta.get(_META + "pooling"), recorded)
        method = self.quantization_method or ""
        if method.startswith("static-qdq-per-channel-int8") and not full_range_codes():
            log.warning(
                "%s holds full-range int8 weights, and this CPU has no VNNI: ONNX Runtime's "
                "int8 kernel saturates here (on Kaggle photos, mean cosine 0.90 to fp32 instead "
                "of 0.995). Build the artifact on this kind of CPU (7-bit weights), or without "
                "--int8",
                self.path.name,
            )

    def _check(self, exported_name: str | None, stamped: str | None, recorded: Any) -> None:
        if exported_name is not None and exported_name != self.name:
            raise EncoderUnavailableError(
                f"{self.path.name} was exported from encoder {exported_name!r}, "
                f"but the manifest says {self.name!r}"
            )
        if stamped is not None and recorded is not None and stamped != recorded:
            raise EncoderUnavailableError(
                f"{self.path.name} pools by {stamped!r}, but the manifest says "
                f"{str(recorded)[:40]!r}: its vectors would not be the catalogue's"
            )
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        size, width = inputs[0].shape[-1], outputs[0].shape[-1]
        if (isinstance(size, int) and size != self.preprocess.size) or (
            isinstance(width, int) and width != self.dim
        ):
            raise EncoderUnavailableError(
                f"{self.path.name} maps {inputs[0].shape} to {outputs[0].shape}; the manifest "
                f"says {self.preprocess.size}px input and {self.dim}-d output"
            )
        self._input = inputs[0].name

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Embed a preprocessed batch; see :class:`~stygig.encoders.base.Encoder`."""
        arr = check_batch(batch, self.preprocess.size)
        if arr.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        (out,) = self.session.run(None, {self._input: arr})
        return l2_normalize(out)

    def describe(self) -> dict[str, object]:
        """The source encoder's description, with the ONNX file, its hash and quantization."""
        return {
            **self._info,
            "runtime": self.runtime,
            "quantization": self.quantization,
            "quantization_method": self.quantization_method,
            "onnx_file": self.path.name,
            "onnx_sha256": sha256_file(self.path),
        }

    def __repr__(self) -> str:
        return f"OnnxEncoder(name={self.name!r}, file={self.path.name!r}, q={self.quantization})"


def load_onnx_encoder(
    onnx_path: Path,
    info: Mapping[str, Any],
    *,
    threads: int | None = None,
    device: str = "cpu",
    spinning: bool = False,
) -> OnnxEncoder:
    """Rebuild an encoder from a manifest's ``describe()`` dictionary and its ``.onnx`` file.

    This is the serving path: it imports onnxruntime and NumPy, never torch.

    Args:
        onnx_path: the exported model.
        info: the ``describe()`` dictionary recorded when the artifact was built.
        threads: ONNX Runtime intra-op threads; default all cores.
        device: ``"cpu"`` or ``"cuda"``.
        spinning: let idle ORT threads busy-wait (see :func:`session_options`).

    Raises:
        EncoderUnavailableError: missing onnxruntime, a missing or mismatched file.
    """
    return OnnxEncoder(Path(onnx_path), info, threads=threads, device=device, spinning=spinning)


def synthetic_calibration(spec: PreprocessSpec, n: int = 32, seed: int = 0) -> np.ndarray:
    """Seeded pictures of coloured shapes, preprocessed for ``spec``: calibration without data."""
    from PIL import Image, ImageDraw

    from stygig.images import preprocess_batch

    rng = np.random.RandomState(seed)
    images = []
    for _ in range(n):
        background = (255, 255, 255) if rng.rand() < 0.7 else tuple(rng.randint(0, 256, 3))
        img = Image.new("RGB", (256, 256), tuple(int(c) for c in background))
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randint(1, 4)):
            x0, y0 = (int(v) for v in rng.randint(0, 200, 2))
            x1, y1 = x0 + int(rng.randint(30, 160)), y0 + int(rng.randint(30, 160))
            colour = tuple(int(c) for c in rng.randint(0, 256, 3))
            shape = draw.ellipse if rng.rand() < 0.5 else draw.rectangle
            shape((x0, y0, x1, y1), fill=colour)
        images.append(img)
    return preprocess_batch(images, spec)


@contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence what the dynamo exporter says that is known harmless, and only that."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..."
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(  # from torch's own pytree code, raised via copyreg
                "ignore",
                message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                category=FutureWarning,
            )
            yield
    finally:
        registration.setLevel(level)


class _DropPreprocessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _quiet_quantization() -> Iterator[None]:
    """Drop ORT's advice to pre-process, logged on the root logger (see module docstring)."""
    advice = _DropPreprocessAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


def _export_fp32(encoder: TorchEncoder, path: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; fail with our message)
        import torch
    except ImportError as e:
        raise missing_extra("torch / onnxscript", e) from e
    size = encoder.preprocess.size
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=65536)
    with _quiet_export(), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            encoder.module,
            (example.to(encoder.device),),
            str(path),
            dynamo=True,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes=({0: batch},),
            external_data=False,  # one self-contained file per artifact (<2 GB for ViT-B/32)
            verbose=False,
        )


class _Batches:
    """An ONNX Runtime ``CalibrationDataReader`` over a preprocessed array, 8 images at a time."""

    def __init__(self, data: np.ndarray) -> None:
        self._batches = iter([data[i : i + 8] for i in range(0, len(data), 8)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._batches, None)
        return None if chunk is None else {ONNX_INPUT: chunk}


def _calibration_set(
    encoder: TorchEncoder, calibration: np.ndarray | Calibration | None
) -> Calibration:
    """The checked calibration images, labelled with their source for the manifest."""
    if calibration is None:
        return Calibration(synthetic_calibration(encoder.preprocess), "synthetic")
    if not isinstance(calibration, Calibration):
        calibration = Calibration(calibration, "given")
    data = check_batch(calibration.images, encoder.preprocess.size)
    if len(data) == 0:
        raise ConfigError("int8 calibration needs at least one image")
    return Calibration(data, calibration.source)


def _quantize(
    encoder: TorchEncoder,
    fp32: Path,
    out: Path,
    calibration: np.ndarray | Calibration | None,
    method: str,
) -> str:
    """Quantize ``fp32`` to ``out``; returns the method's name for the manifest."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet_quantization():
        if method == "dynamic":
            quantize_dynamic(
                fp32, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
            )
            return "dynamic-int8-matmul"
        calib = _calibration_set(encoder, calibration)
        prepared = fp32.with_suffix(".pre.onnx")
        quant_pre_process(str(fp32), str(prepared))
        # Without VNNI, ONNX Runtime's int8 kernel adds pairs of uint8 x int8 products in 16
        # bits with saturation: full-range weights drift to mean cosine 0.90 (min 0.70) from
        # fp32 on Kaggle photos there; 7-bit weights never saturate (0.97, min 0.91).
        reduce = not full_range_codes()
        quantize_static(
            prepared,
            out,
            _Batches(calib.images),  # duck-typed CalibrationDataReader
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )
        weights = "int7" if reduce else "int8"
        return f"static-qdq-per-channel-{weights} (calibration: {calib.describe()})"


def _stamp(path: Path, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _verify(encoder: TorchEncoder, path: Path, int8: bool) -> None:
    """Batch 1 and 5 must run; fp32 must agree with torch (cosine > 0.999)."""
    exported = load_onnx_encoder(path, encoder.describe())
    rng = np.random.RandomState(0)
    size = encoder.preprocess.size
    batch = rng.standard_normal((5, 3, size, size)).astype(np.float32)
    one, five = exported.encode(batch[:1]), exported.encode(batch)
    if one.shape != (1, encoder.dim) or five.shape != (5, encoder.dim):
        raise EncoderUnavailableError(
            f"exported {path.name} gives shapes {one.shape}, {five.shape}"
        )
    if not np.isfinite(five).all():
        raise EncoderUnavailableError(f"exported {path.name} gives non-finite embeddings")
    if not int8:
        cosine = float((five * encoder.encode(batch)).sum(axis=1).min())
        if cosine < 0.999:
            raise EncoderUnavailableError(
                f"exported {path.name} disagrees with torch (min cosine {cosine:.5f})"
            )


def export_onnx(
    encoder: Encoder,
    path: Path,
    *,
    int8: bool = False,
    calibration: np.ndarray | Calibration | None = None,
    int8_method: str | None = None,
    verify: bool = True,
) -> Path:
    """Export a torch-backed encoder to one ``.onnx`` file with a dynamic batch dimension.

    Args:
        encoder: a :class:`TorchEncoder` (from ``load_encoder(..., runtime="torch")``).
        path: where to write the file (replaced atomically).
        int8: quantize to int8 (see the module docstring for the method per architecture).
        calibration: images for static int8 calibration: a :class:`Calibration` (from
            :func:`~stygig.encoders.calibration.catalogue_calibration`, recorded in the manifest
            as "calibration: 64 catalogue images") or a preprocessed array; default: synthetic
            shapes. Ignored for fp32 and for dynamic quantization.
        int8_method: ``"dynamic"`` or ``"static"``; default the encoder's own
            (:attr:`TorchEncoder.int8_method`). For benchmarks that compare the two.
        verify: run batch 1 and 5 through ONNX Runtime (and compare fp32 with torch).

    Returns:
        ``path``.

    Raises:
        ConfigError: the encoder is not torch-backed, or an unknown ``int8_method``.
        EncoderUnavailableError: torch/onnx extras missing, or the exported model is broken.
    """
    if not isinstance(encoder, TorchEncoder):
        raise ConfigError(
            f"only torch-backed encoders export to ONNX; {encoder.name!r} runs on {encoder.runtime}"
        )
    method = int8_method or encoder.int8_method
    if method not in _INT8_METHODS:
        raise ConfigError(f"unknown int8 method {method!r}; use 'dynamic' or 'static'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".stygig-onnx-", dir=path.parent) as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        _export_fp32(encoder, fp32)
        props = {_META + "encoder": encoder.name, _META + "quantization": ""}
        if encoder.pooling is not None:
            props[_META + "pooling"] = encoder.pooling
        final = fp32
        if int8:
            final = Path(tmp) / "model.int8.onnx"
            described = _quantize(encoder, fp32, final, calibration, method)
            props |= {_META + "quantization": "int8", _META + "quantization_method": described}
        _stamp(final, props)
        os.replace(final, path)
    if verify:
        _verify(encoder, path, int8)
    return path
