"""The one place that decodes, validates and preprocesses images.

Every photo that enters StyGig — a catalogue image at build time or a shopper's upload at query
time — goes through :func:`decode_image`, so limits and conversions are the same everywhere:

* formats: JPEG (and MPO, the multi-picture JPEG phones write), PNG, WebP;
* limits: a byte limit and a pixel-count limit, checked from the header *before* decoding, so a
  decompression bomb costs nothing;
* EXIF orientation applied; RGBA/LA/P composited on white (product shots), grey, CMYK and 16-bit
  converted to 8-bit RGB;
* large JPEGs decoded at reduced scale with libjpeg's DCT scaling (``Image.draft``) when the caller
  says how small the result may be — about 4x faster for a phone photo going to a 224 input.

Each failure raises a specific :mod:`stygig.errors` type with a message a person can act on.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from stygig.errors import ImageTooLargeError, InvalidImageError, UnsupportedMediaError

__all__ = [
    "ACCEPTED_FORMATS",
    "ImageLimits",
    "PreprocessSpec",
    "decode_image",
    "fit_array",
    "preprocess",
    "preprocess_batch",
    "sniff_format",
]

# Never decode a partial image silently: a truncated file is an error, not a grey stripe.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP"})

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
)


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied before any pixel is decoded."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # a 48 MP phone photo is 48e6; 40e6 leaves room for 12-36 MP
    min_side: int = 8


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class PreprocessSpec:
    """How an encoder expects its input: resize, crop and normalise.

    The tensor fed to the model is ``((pixels / 255) - mean) / std`` per channel, channels first.
    """

    size: int = 224
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    resize: Literal["shortest_edge", "squash"] = "shortest_edge"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly description, recorded in the artifact manifest."""
        return asdict(self)


def sniff_format(data: bytes) -> str | None:
    """Guess an image format from its first bytes (``"JPEG"``, ``"PNG"``, ``"WEBP"`` or None)."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _read_source(source: bytes | str | Path, limits: ImageLimits) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError as e:
            raise InvalidImageError(f"image file not found: {path}", code="image_not_found") from e
        except OSError as e:
            raise InvalidImageError(f"cannot read image file {path}: {e}") from e
        if size > limits.max_bytes:
            raise ImageTooLargeError(
                f"image file {path.name} is {size:,} bytes; the limit is {limits.max_bytes:,}"
            )
        data = path.read_bytes()
    if not data:
        raise InvalidImageError("the image is empty (0 bytes)", code="empty_image")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"image is {len(data):,} bytes; the limit is {limits.max_bytes:,}")
    return data


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB; transparency is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        grey = np.clip(arr if arr.max() > 1.0 else arr * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(
    source: bytes | str | Path,
    *,
    min_size: int | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> Image.Image:
    """Decode and validate one image into an 8-bit RGB ``PIL.Image``.

    Args:
        source: encoded bytes, or a path to a file.
        min_size: if given, the image may be decoded at reduced scale as long as both sides stay
            at least this large (JPEG DCT scaling); pass the encoder's input size.
        limits: byte and pixel limits, checked before decoding.

    Raises:
        InvalidImageError: not an image, corrupt or truncated, or too small.
        UnsupportedMediaError: a real image in a format StyGig does not accept (GIF, TIFF, ...).
        ImageTooLargeError: over the byte or pixel limit.
    """
    data = _read_source(source, limits)
    img: Image.Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image has too many pixels: {e}") from e
    except UnidentifiedImageError as e:
        raise InvalidImageError(
            "the data is not an image StyGig can read", code="not_an_image"
        ) from e
    except Exception as e:  # any decoder failure on hostile bytes is the input's fault
        raise InvalidImageError(f"the image header is corrupt: {e}") from e
    if img.format not in ACCEPTED_FORMATS:
        raise UnsupportedMediaError(f"{img.format} images are not accepted; send JPEG, PNG or WebP")
    width, height = img.size
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height:,} pixels; "
            f"the limit is {limits.max_pixels:,}"
        )
    if min(width, height) < limits.min_side:
        raise InvalidImageError(
            f"image is {width}x{height}; both sides must be at least {limits.min_side} pixels",
            code="image_too_small",
        )
    try:
        with warnings.catch_warnings():
            # Our own pixel limit was checked above; PIL's generic bomb warning adds nothing.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if min_size is not None and img.format in ("JPEG", "MPO"):
                # EXIF rotation swaps sides but draft keeps both >= the request, so it is safe.
                img.draft("RGB", (min_size, min_size))
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _to_rgb(img)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image has too many pixels: {e}") from e
    except Exception as e:  # PIL's decoders raise OSError, ValueError, struct.error, ...
        raise InvalidImageError(f"the image data is corrupt or truncated: {e}") from e


_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def _resize_and_crop(img: Image.Image, spec: PreprocessSpec) -> Image.Image:
    size = spec.size
    resample = _RESAMPLE[spec.interpolation]
    if spec.resize == "squash":
        return img.resize((size, size), resample)
    width, height = img.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        # reducing_gap: a cheap box pre-shrink for big inputs, then the exact filter.
        img = img.resize((new_w, new_h), resample, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def preprocess(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize, centre-crop and normalise one RGB image to a float32 ``(3, size, size)`` array."""
    arr = np.asarray(_resize_and_crop(img, spec), dtype=np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(spec.std, dtype=np.float32) * 255.0)
    return np.ascontiguousarray(((arr - mean) * inv_std).transpose(2, 0, 1))


def preprocess_batch(imgs: list[Image.Image], spec: PreprocessSpec) -> np.ndarray:
    """Preprocess several images into one float32 ``(n, 3, size, size)`` batch."""
    if not imgs:
        return np.zeros((0, 3, spec.size, spec.size), dtype=np.float32)
    return np.stack([preprocess(img, spec) for img in imgs])


def fit_array(img: Image.Image, max_side: int = 128) -> np.ndarray:
    """The whole image (no crop) shrunk to fit ``max_side``, as uint8 ``(h, w, 3)``: colour input."""
    width, height = img.size
    scale = max_side / max(width, height)
    if scale < 1.0:
        img = img.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))),
            Image.Resampling.BILINEAR,
            reducing_gap=2.0,
        )
    return np.asarray(img, dtype=np.uint8)
