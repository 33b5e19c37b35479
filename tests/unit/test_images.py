from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from stygig.errors import (
    ImageTooLargeError,
    InvalidImageError,
    UnsupportedMediaError,
)
from stygig.images import (
    ImageLimits,
    PreprocessSpec,
    decode_image,
    fit_array,
    preprocess,
    preprocess_batch,
    sniff_format,
)
from tests.conftest import encode, garment_image


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_decodes_accepted_formats_to_rgb(fmt: str) -> None:
    img = decode_image(encode(garment_image(), fmt))
    assert img.mode == "RGB"
    assert img.size == (224, 224)
    assert np.asarray(img)[112, 112, 0] > 150  # the red garment survived


def test_sniff_format() -> None:
    assert sniff_format(encode(garment_image(), "JPEG")) == "JPEG"
    assert sniff_format(encode(garment_image(), "PNG")) == "PNG"
    assert sniff_format(encode(garment_image(), "WEBP")) == "WEBP"
    assert sniff_format(b"GIF89a....") is None


def test_decodes_from_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "x.png"
    garment_image().save(p)
    assert decode_image(p).size == (224, 224)


def test_missing_file_is_invalid_image(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidImageError, match="not found") as e:
        decode_image(tmp_path / "nope.jpg")
    assert e.value.code == "image_not_found"


def test_empty_bytes() -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"")


def test_non_image_bytes() -> None:
    with pytest.raises(InvalidImageError) as e:
        decode_image(b"this is a text file, not a photo" * 10)
    assert e.value.code == "not_an_image"
    assert e.value.http_status == 400


def test_truncated_jpeg() -> None:
    data = encode(garment_image(size=(400, 400)), "JPEG", quality=95)
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def test_corrupt_png_body() -> None:
    data = bytearray(encode(garment_image(), "PNG"))
    data[60:200] = b"\x00" * 140
    with pytest.raises(InvalidImageError):
        decode_image(bytes(data))


def test_gif_is_unsupported_media() -> None:
    with pytest.raises(UnsupportedMediaError, match="GIF") as e:
        decode_image(encode(garment_image(), "GIF"))
    assert e.value.http_status == 415


def test_pixel_limit_checked_before_decoding() -> None:
    # 9000x9000 1-bit PNG: tiny on disk, 81 MP when decoded — a decompression bomb.
    bomb = encode(Image.new("1", (9000, 9000)), "PNG")
    assert len(bomb) < 200_000
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="pixels") as e:
        decode_image(bomb)
    assert time.perf_counter() - start < 0.5  # refused from the header, not after decoding
    assert e.value.http_status == 413


def test_byte_limit() -> None:
    data = encode(garment_image(), "PNG")
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(data, limits=ImageLimits(max_bytes=len(data) - 1))


def test_tiny_image_rejected() -> None:
    with pytest.raises(InvalidImageError) as e:
        decode_image(encode(Image.new("RGB", (4, 4)), "PNG"))
    assert e.value.code == "image_too_small"


def test_exif_orientation_applied() -> None:
    img = garment_image(size=(300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (200, 300)


def test_rgba_composited_on_white() -> None:
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (16, 16, 48, 48))
    arr = np.asarray(decode_image(encode(rgba, "PNG")))
    assert tuple(arr[0, 0]) == (255, 255, 255)
    assert tuple(arr[32, 32]) == (0, 0, 255)


def test_grey_cmyk_palette_and_16bit_converted() -> None:
    grey = decode_image(encode(Image.new("L", (32, 32), 100), "PNG"))
    assert grey.mode == "RGB" and tuple(np.asarray(grey)[0, 0]) == (100, 100, 100)
    cmyk = decode_image(encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"))
    r, g, b = np.asarray(cmyk)[16, 16]
    assert r > 200 and g < 60 and b < 60
    pal = decode_image(encode(garment_image().convert("P"), "PNG"))
    assert pal.mode == "RGB"
    sixteen = Image.fromarray(np.full((32, 32), 65535 // 2, dtype=np.uint16))
    out = decode_image(encode(sixteen, "PNG"))
    assert out.mode == "RGB" and abs(int(np.asarray(out)[0, 0, 0]) - 127) <= 1


def test_draft_decodes_large_jpeg_at_reduced_scale() -> None:
    big = garment_image(size=(1080, 1440))
    data = encode(big, "JPEG", quality=90)
    reduced = decode_image(data, min_size=224)
    assert min(reduced.size) >= 224 and max(reduced.size) < 1440
    assert decode_image(data).size == (1080, 1440)


def test_preprocess_shape_normalisation_and_crop() -> None:
    spec = PreprocessSpec(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = preprocess(Image.new("RGB", (300, 600), (255, 0, 0)), spec)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert np.allclose(x[0], 1.0, atol=1e-5) and np.allclose(x[1], -1.0, atol=1e-5)
    batch = preprocess_batch([garment_image(), garment_image()], spec)
    assert batch.shape == (2, 3, 224, 224)
    assert preprocess_batch([], spec).shape == (0, 3, 224, 224)


def test_preprocess_centre_crops_long_side() -> None:
    arr = np.zeros((100, 300, 3), dtype=np.uint8)
    arr[:, :100] = 255  # white left third, cropped away by a centre crop
    spec = PreprocessSpec(size=100, mean=(0, 0, 0), std=(1, 1, 1), interpolation="bilinear")
    x = preprocess(Image.fromarray(arr), spec)
    assert x.max() < 0.05


def test_fit_array_keeps_whole_image() -> None:
    arr = fit_array(Image.new("RGB", (400, 200)), 128)
    assert arr.shape == (64, 128, 3) and arr.dtype == np.uint8
    assert fit_array(Image.new("RGB", (50, 40)), 128).shape == (40, 50, 3)


def test_error_body_shape() -> None:
    with pytest.raises(InvalidImageError) as e:
        decode_image(io.BytesIO(b"xx").getvalue())
    assert e.value.to_dict() == {"error": {"code": e.value.code, "message": e.value.message}}


def test_header_beyond_pils_own_bomb_limit_is_too_large() -> None:
    # Over 2 x PIL's MAX_IMAGE_PIXELS: PIL itself refuses at open(); still a 413, not a crash.
    bomb = encode(Image.new("1", (14000, 14000)), "PNG")
    with pytest.raises(ImageTooLargeError):
        decode_image(bomb)
