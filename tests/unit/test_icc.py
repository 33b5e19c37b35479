"""Colour management in the one decode path: photos with an embedded ICC profile become sRGB.

The Display P3 profile is built here, by code, from the published primaries (no file, no
licence): an ICC v4 matrix/TRC display profile with the sRGB transfer curve, D65 white adapted
to the D50 connection space with the Bradford matrix, as Apple's "Display P3" profile is.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Iterable, Sequence

import numpy as np
import pytest
from PIL import Image, ImageCms

from stygig.images import DEFAULT_LIMITS, ImageLimits, decode_image

# -- profiles built from primaries ---------------------------------------------------------------

D50 = np.array([0.9642, 1.0, 0.8249])
D65_XY = (0.3127, 0.3290)
P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
SRGB_PRIMARIES = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
# IEC 61966-2-1 transfer curve as ICC parametric function 3: Y = (aX + b)^g if X >= d, else cX.
SRGB_CURVE = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)


def _xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def rgb_to_xyz(primaries: Sequence[tuple[float, float]], white: tuple[float, float]) -> np.ndarray:
    """Linear RGB -> XYZ (columns: the primaries scaled so that RGB 1,1,1 is ``white``)."""
    m = np.stack([_xyz(*p) for p in primaries], axis=1)
    return m * np.linalg.solve(m, _xyz(*white))


def _adapt_to_d50(white: tuple[float, float]) -> np.ndarray:
    src, dst = _BRADFORD @ _xyz(*white), _BRADFORD @ D50
    out: np.ndarray = np.linalg.inv(_BRADFORD) @ np.diag(dst / src) @ _BRADFORD
    return out


def _s15(values: Iterable[float]) -> bytes:
    return b"".join(struct.pack(">i", round(float(v) * 65536)) for v in values)


def _mluc(text: str) -> bytes:
    body = text.encode("utf-16-be")
    return b"mluc" + bytes(4) + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(body), 28) + body


def _xyz_tag(v: Iterable[float]) -> bytes:
    return b"XYZ " + bytes(4) + _s15(v)


def _profile(colour_space: bytes, tags: dict[bytes, bytes]) -> bytes:
    """An ICC v4.3 display profile holding ``tags`` (each padded to 4 bytes)."""
    table, body = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, data in tags.items():
        data += bytes(-len(data) % 4)
        table += struct.pack(">4sII", sig, offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I4sI4s4s4s", size, b"\0\0\0\0", 0x04300000, b"mntr", colour_space, b"XYZ ")
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + bytes(24)  # platform, flags, manufacturer, model, attributes
        + struct.pack(">I", 0)  # perceptual
        + _s15(D50)
        + bytes(4 + 16 + 28)  # creator, profile id (none), reserved
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def rgb_profile(
    primaries: Sequence[tuple[float, float]], name: str, curve: Sequence[float] = SRGB_CURVE
) -> bytes:
    """A matrix/TRC RGB display profile for ``primaries`` and D65 white."""
    colorants = _adapt_to_d50(D65_XY) @ rgb_to_xyz(primaries, D65_XY)
    trc = b"para" + bytes(4) + struct.pack(">HH", 3, 0) + _s15(curve)
    chad = b"sf32" + bytes(4) + _s15(_adapt_to_d50(D65_XY).ravel())
    return _profile(
        b"RGB ",
        {
            b"desc": _mluc(name),
            b"cprt": _mluc("No copyright, use freely"),
            b"wtpt": _xyz_tag(D50),
            b"chad": chad,
            b"rXYZ": _xyz_tag(colorants[:, 0]),
            b"gXYZ": _xyz_tag(colorants[:, 1]),
            b"bXYZ": _xyz_tag(colorants[:, 2]),
            b"rTRC": trc,
            b"gTRC": trc,
            b"bTRC": trc,
        },
    )


def display_p3_profile() -> bytes:
    """Display P3: the P3 primaries, D65 white, the sRGB transfer curve (about 600 bytes)."""
    return rgb_profile(P3_PRIMARIES, "Display P3 (StyGig test)")


def gray_profile(gamma: float) -> bytes:
    """A grey display profile with a pure power-law curve."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    return _profile(
        b"GRAY",
        {
            b"desc": _mluc(f"Gray gamma {gamma:g} (StyGig test)"),
            b"cprt": _mluc("No copyright, use freely"),
            b"wtpt": _xyz_tag(D50),
            b"kTRC": curve,
        },
    )


def lut_profile(grid: int = 5) -> bytes:
    """A table-based RGB profile (lut16 A2B0 to Lab) that maps every colour to mid grey."""
    identity = _s15([1, 0, 0, 0, 1, 0, 0, 0, 1])
    ramp = np.array([0, 65535], ">u2").tobytes()
    clut = np.tile(np.array([32768, 32768, 32768], ">u2"), grid**3).tobytes()
    lut = b"mft2" + bytes(4) + bytes([3, 3, grid, 0]) + identity + struct.pack(">HH", 2, 2)
    lut += ramp * 3 + clut + ramp * 3
    tags = {b"desc": _mluc("LUT (StyGig test)"), b"cprt": _mluc("none"), b"wtpt": _xyz_tag(D50)}
    profile = _profile(b"RGB ", {**tags, b"A2B0": lut})
    return profile[:20] + b"Lab " + profile[24:]  # the connection space of the table


# -- the reference conversion, in NumPy ------------------------------------------------------


def _decode_srgb(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _encode_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def p3_to_srgb(pixels: np.ndarray) -> np.ndarray:
    """P3 8-bit RGB -> sRGB 8-bit RGB (same white: no adaptation; out of gamut clipped)."""
    m = np.linalg.inv(rgb_to_xyz(SRGB_PRIMARIES, D65_XY)) @ rgb_to_xyz(P3_PRIMARIES, D65_XY)
    linear = _decode_srgb(pixels.astype(np.float64) / 255.0) @ m.T
    return np.asarray(np.round(_encode_srgb(linear) * 255.0), np.int64)


def colour_grid() -> np.ndarray:
    """(64, 64, 3) uint8: 4,096 colours spread over the RGB cube, inside and at its edges."""
    levels = np.linspace(0, 255, 16).round().astype(np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    return np.stack([r, g, b], axis=-1).reshape(64, 64, 3)


def photo_pixels(size: tuple[int, int]) -> np.ndarray:
    """(height, width, 3) uint8: smooth gradients plus texture, like a photo."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [xx / width * 200 + 30, yy / height * 180 + 40, (xx + yy) / (width + height) * 220],
        axis=-1,
    )
    noise = np.random.default_rng(0).normal(0, 12, (height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def p3_photo(size: tuple[int, int] = (1080, 1440), *, fmt: str = "JPEG", **save: object) -> bytes:
    """A photo-like image of ``size`` tagged Display P3."""
    return encode(
        Image.fromarray(photo_pixels(size)), fmt, icc_profile=display_p3_profile(), **save
    )


def encode(img: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def as_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img, np.int64)


# -- tests ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_profile_cache() -> None:
    """Each test starts with no profile parsed (warnings are logged once per profile)."""
    from stygig import images

    with images._icc_lock:
        images._icc_cache.clear()


def test_the_generated_profile_is_display_p3() -> None:
    """lcms reads it as a matrix/TRC RGB display profile with P3's primaries."""
    icc = display_p3_profile()
    assert len(icc) < 1_000
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile
    assert profile.is_matrix_shaper and profile.xcolor_space.strip() == "RGB"
    assert profile.profile_description == "Display P3 (StyGig test)"
    colorants = _adapt_to_d50(D65_XY) @ rgb_to_xyz(P3_PRIMARIES, D65_XY)
    stored = (profile.red_colorant, profile.green_colorant, profile.blue_colorant)
    for n, colorant in enumerate(stored):
        assert colorant is not None
        assert colorant[0] == pytest.approx(tuple(colorants[:, n]), abs=1e-4)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_a_p3_photo_is_converted_to_srgb(fmt: str) -> None:
    """Every colour of the grid, tagged P3, decodes to the analytic P3 -> sRGB conversion
    (lossless formats, so only the conversion is measured: within 1 level)."""
    grid = colour_grid()
    save: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(Image.fromarray(grid), fmt, icc_profile=display_p3_profile(), **save)
    got = as_array(decode_image(data))
    want = p3_to_srgb(grid)
    assert np.abs(got - want).max() <= 1
    # ... and the conversion matters: untagged, the same bytes read as sRGB are far off.
    assert np.abs(grid.astype(np.int64) - want).max() > 40


@pytest.mark.slow
def test_a_p3_jpeg_is_converted_at_full_and_reduced_scale() -> None:
    """A phone-sized P3 JPEG: its pixels equal the same JPEG without the profile (the same
    compressed pixels), converted to sRGB, whether decoded at full size or DCT-scaled for a 224
    encoder input."""
    pixels = photo_pixels((1080, 1440))
    tagged_jpeg = encode(Image.fromarray(pixels), "JPEG", icc_profile=display_p3_profile())
    plain_jpeg = encode(Image.fromarray(pixels), "JPEG")
    assert b"ICC_PROFILE" in tagged_jpeg and b"ICC_PROFILE" not in plain_jpeg
    for min_size in (None, 224):
        untagged = as_array(decode_image(plain_jpeg, min_size=min_size))
        tagged = as_array(decode_image(tagged_jpeg, min_size=min_size))
        assert tagged.shape == untagged.shape
        assert np.abs(tagged - p3_to_srgb(untagged)).max() <= 1
        assert np.abs(tagged - untagged).mean() > 3


def test_a_p3_png_with_transparency_is_composited_then_converted() -> None:
    """RGBA: composited on white first (white is white in both spaces), then converted."""
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = (200, 60, 40)
    rgba[:16, :, 3] = 255  # top half opaque, bottom half transparent
    data = encode(Image.fromarray(rgba, "RGBA"), "PNG", icc_profile=display_p3_profile())
    got = as_array(decode_image(data))
    assert np.abs(got[0, 0] - p3_to_srgb(np.array([200, 60, 40]))).max() <= 1
    assert tuple(got[31, 0]) == (255, 255, 255)


def test_a_grey_photo_with_a_grey_profile_is_converted() -> None:
    """A grey image tagged gamma 1.8 (the old Mac grey) decodes to sRGB-encoded grey levels."""
    levels = np.arange(256, dtype=np.uint8).repeat(16).reshape(64, 64)
    data = encode(Image.fromarray(levels, "L"), "PNG", icc_profile=gray_profile(1.8))
    got = as_array(decode_image(data))
    want = np.round(_encode_srgb((levels / 255.0) ** 1.8) * 255.0)
    assert np.abs(got[..., 0] - want).max() <= 1
    assert np.abs(got[..., 0] - levels).max() > 10
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_untagged_and_srgb_tagged_photos_are_not_converted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No profile: no colour management at all. An sRGB profile (lcms's own and one written
    with the same curves and primaries by the builder above): the pixels are left exactly as
    decoded and no transform runs."""
    grid = Image.fromarray(colour_grid())
    untagged = as_array(decode_image(encode(grid, "PNG")))
    srgb_profiles = [
        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
        rgb_profile(SRGB_PRIMARIES, "sRGB (StyGig test)"),
    ]
    for icc in srgb_profiles:  # first decode: the profile is recognised as sRGB and cached
        assert (as_array(decode_image(encode(grid, "PNG", icc_profile=icc))) == untagged).all()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("no transform may run")

    monkeypatch.setattr(ImageCms, "applyTransform", refuse)
    monkeypatch.setattr(ImageCms, "buildTransform", refuse)
    assert (as_array(decode_image(encode(grid, "PNG"))) == untagged).all()
    for icc in srgb_profiles:
        assert (as_array(decode_image(encode(grid, "PNG", icc_profile=icc))) == untagged).all()


@pytest.mark.parametrize(
    "icc",
    [
        b"\x00" * 5_000,
        b"not a profile",
        display_p3_profile()[:200],
        gray_profile(2.2),
        lut_profile(),
    ],
    ids=["zeros", "text", "truncated", "grey-profile-on-rgb", "table-based"],
)
def test_an_unusable_profile_is_ignored_with_a_warning(
    icc: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed profile, one for another colour space than the pixels, or a table-based
    one (50 to 500 ms for LittleCMS to prepare; cameras and phones write matrix/curve
    profiles) is ignored: the photo decodes as if untagged (what browsers show), and a
    warning is logged."""
    grid = Image.fromarray(colour_grid())
    untagged = as_array(decode_image(encode(grid, "PNG")))
    with caplog.at_level(logging.WARNING, logger="stygig.images"):
        got = as_array(decode_image(encode(grid, "PNG", icc_profile=icc)))
    assert (got == untagged).all()
    assert any("ICC profile" in r.getMessage() for r in caplog.records)
    assert all("not a profile" not in r.getMessage() for r in caplog.records)


def _with_tags(icc: bytes, **tags: bytes) -> bytes:
    """``icc`` with the named tags' data replaced in place (same size)."""
    out = bytearray(icc)
    for i in range(struct.unpack(">I", icc[128:132])[0]):
        sig, offset, size = struct.unpack(">4sII", icc[132 + 12 * i : 144 + 12 * i])
        if (data := tags.get(sig.decode().strip())) is not None:
            assert len(data) <= size
            out[offset : offset + len(data)] = data
    return bytes(out)


def _gamma_curve(gamma: float) -> bytes:
    return b"para" + bytes(4) + struct.pack(">HH", 0, 0) + _s15([gamma])


@pytest.mark.parametrize(
    "broken",
    [
        {"rXYZ": _xyz_tag([0, 0, 0]), "gXYZ": _xyz_tag([0, 0, 0]), "bXYZ": _xyz_tag([0, 0, 0])},
        {"rXYZ": _xyz_tag([30000, 30000, 30000]), "gXYZ": _xyz_tag([0.1, 0.9, 0.1])},
        {"rTRC": _gamma_curve(0), "gTRC": _gamma_curve(0), "bTRC": _gamma_curve(0)},
        {"rTRC": _gamma_curve(255), "gTRC": _gamma_curve(255), "bTRC": _gamma_curve(255)},
    ],
    ids=["zero-colorants", "huge-colorant", "gamma-0", "gamma-255"],
)
def test_a_profile_that_would_wreck_the_photo_is_ignored(
    broken: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """Audit, session 46: a well-formed but broken matrix/curve profile (colorants of zero or
    huge, a gamma of 0 or 255) was applied, and the photo (and a catalogue item changed with
    it) turned black, white or magenta. Such a profile is ignored like a malformed one; real
    ones (P3, and the wider and linear ones here) still convert."""
    grid = Image.fromarray(colour_grid())
    untagged = as_array(decode_image(encode(grid, "PNG")))
    icc = _with_tags(display_p3_profile(), **broken)
    with caplog.at_level(logging.WARNING, logger="stygig.images"):
        got = as_array(decode_image(encode(grid, "PNG", icc_profile=icc)))
    assert (got == untagged).all()
    assert any("ICC profile" in r.getMessage() for r in caplog.records)
    for primaries, curve in (
        (((0.64, 0.33), (0.21, 0.71), (0.15, 0.06)), (2.2, 1, 0, 0, 0)),  # Adobe RGB
        (((0.7347, 0.2653), (0.1596, 0.8404), (0.0366, 0.0001)), (1.8, 1, 0, 0, 0)),  # ProPhoto
        (P3_PRIMARIES, (1.0, 1, 0, 0, 0)),  # linear P3
    ):
        wide = rgb_profile(primaries, "wide", curve)
        assert not (as_array(decode_image(encode(grid, "PNG", icc_profile=wide))) == untagged).all()


def test_a_cmyk_photo_keeps_pillows_conversion(caplog: pytest.LogCaptureFixture) -> None:
    """CMYK photos are not colour managed: their profile is ignored, with a warning."""
    cmyk = Image.new("CMYK", (64, 64), (0, 200, 200, 0))
    plain = as_array(decode_image(encode(cmyk, "JPEG")))
    with caplog.at_level(logging.WARNING, logger="stygig.images"):
        tagged = as_array(decode_image(encode(cmyk, "JPEG", icc_profile=display_p3_profile())))
    assert (tagged == plain).all()
    assert any("CMYK photos are not converted" in r.getMessage() for r in caplog.records)


def test_a_profile_over_the_size_limit_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """The limit is checked before lcms parses anything."""
    grid = Image.fromarray(colour_grid())
    data = encode(grid, "PNG", icc_profile=display_p3_profile())
    small = ImageLimits(max_icc_profile_bytes=100)
    with caplog.at_level(logging.WARNING, logger="stygig.images"):
        got = as_array(decode_image(data, limits=small))
    assert (got == colour_grid()).all()
    assert any("over the limit" in r.getMessage() for r in caplog.records)
    assert DEFAULT_LIMITS.max_icc_profile_bytes >= 64 * 1024
    assert (as_array(decode_image(data)) != colour_grid()).any()


def test_a_transform_is_built_once_per_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Photos sharing a profile (a catalogue, one phone's uploads) share its transform."""
    built: list[object] = []
    real = ImageCms.buildTransform

    def counting(*args: object, **kwargs: object) -> object:
        built.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageCms, "buildTransform", counting)
    icc = rgb_profile(P3_PRIMARIES, "Display P3, cache test")  # a profile no other test uses
    data = encode(Image.fromarray(colour_grid()), "PNG", icc_profile=icc)
    first = as_array(decode_image(data))
    assert len(built) == 1
    for _ in range(3):
        assert (as_array(decode_image(data)) == first).all()
    assert len(built) == 1
