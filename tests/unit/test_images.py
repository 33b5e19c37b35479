from __future__ import annotations

import io
import os
import random
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from stygig.errors import (
    ImageTooLargeError,
    InvalidImageError,
    StygigError,
    UnsupportedMediaError,
)
from stygig.images import (
    ImageLimits,
    PreprocessSpec,
    decode_image,
    fit_array,
    preprocess,
    preprocess_batch,
    read_header,
    sniff_format,
)
from tests.conftest import KAGGLE_DIR, MANGO_DIR, REPO, encode, garment_image, require_dataset

# Time limits below are on this process's CPU time (time.process_time), the work a decode does:
# unlike wall-clock time it does not grow when a shared, busy machine runs other jobs.

# Peak memory is read from /proc (VmHWM, reset through clear_refs): Linux only.
LINUX_PROC = Path("/proc/self/clear_refs").exists()


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


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_read_header_reads_the_size_without_decoding(fmt: str) -> None:
    header = read_header(encode(Image.new("RGB", (300, 170), "red"), fmt))
    assert header is not None and (header.format, header.width, header.height) == (fmt, 300, 170)
    assert header.pixels == 300 * 170 and not header.progressive


def test_read_header_tells_a_progressive_jpeg() -> None:
    header = read_header(encode(garment_image(), "JPEG", progressive=True))
    assert header is not None and header.format == "JPEG" and header.progressive


def test_read_header_is_none_where_decode_would_refuse() -> None:
    """None for whatever the decode's own checks refuse before any pixel: the decode then
    answers why (a foreign format, a broken header, a scan bomb, not an image)."""
    truncated = encode(garment_image(), "JPEG")[:40]
    for data in (*FOREIGN.values(), truncated, progressive_bomb(300, 200), b"hello", b""):
        assert read_header(data) is None


def test_decodes_from_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "x.png"
    garment_image().save(p)
    assert decode_image(p).size == (224, 224)


def test_missing_file_is_invalid_image(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidImageError, match="not found") as e:
        decode_image(tmp_path / "nope.jpg")
    assert e.value.code == "image_not_found"


def test_a_fifo_or_a_device_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO named as a photo hung batch runs and ``stygig recommend`` (a blocking open waits
    for a writer); a device has no end. Both are refused at once as not regular files."""
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    codes: list[str] = []

    def attempt() -> None:
        for source in (fifo, Path("/dev/zero")):
            with pytest.raises(InvalidImageError) as e:
                decode_image(source)
            codes.append(e.value.code)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the read waited on the FIFO"
    assert codes == ["not_a_regular_file"] * 2


def test_messages_never_show_the_server_path(tmp_path: Path) -> None:
    folder = tmp_path / "private-folder"
    folder.mkdir()
    (folder / "big.png").write_bytes(encode(garment_image(), "PNG"))
    (folder / "text.jpg").write_bytes(b"not a photo at all" * 10)
    attempts: list[Callable[[], object]] = [
        lambda: decode_image(folder / "missing.jpg"),
        lambda: decode_image(folder),  # a directory: exists, cannot be read as a file
        lambda: decode_image(folder / "big.png", limits=ImageLimits(max_bytes=100)),
        lambda: decode_image(folder / "text.jpg"),
    ]
    for attempt in attempts:
        with pytest.raises((InvalidImageError, ImageTooLargeError)) as e:
            attempt()
        assert "private-folder" not in e.value.message and str(tmp_path) not in e.value.message


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


def psd_bytes(width: int = 16, height: int = 16) -> bytes:
    """A minimal uncompressed RGB Photoshop file (Pillow reads PSD but cannot write it)."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    return header + struct.pack(">IIIH", 0, 0, 0, 0) + bytes(3 * width * height)


FOREIGN = {
    "GIF": encode(garment_image(), "GIF"),
    "TIFF": encode(garment_image(), "TIFF"),
    "BMP": encode(garment_image(), "BMP"),
    "ICO": encode(garment_image(), "ICO"),
    "PSD": psd_bytes(),
}


def test_only_the_accepted_formats_parsers_see_the_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any other of Pillow's ~40 parsers is never run on client bytes: the format is named from
    its signature and refused with 415."""
    Image.init()
    parsed: list[str] = []
    for name, (factory, accept) in list(Image.OPEN.items()):
        if name not in ("JPEG", "PNG", "WEBP"):

            def spy(*args: object, _name: str = name, _factory: object = factory) -> object:
                parsed.append(_name)
                raise SyntaxError("a parser StyGig must not use")

            monkeypatch.setitem(Image.OPEN, name, (spy, accept))
    for name, data in FOREIGN.items():
        with pytest.raises(UnsupportedMediaError, match=name) as e:
            decode_image(data)
        assert e.value.http_status == 415 and e.value.code == "unsupported_media_type"
    assert parsed == []
    assert decode_image(encode(garment_image(), "PNG")).size == (224, 224)


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    box = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(box)) + b"ftyp" + box + bytes(64)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (_ftyp(b"heic", b"mif1", b"heic"), "HEIC"),
        (_ftyp(b"hevc", b"msf1", b"hevc"), "HEIC"),  # a burst: an image sequence
        (_ftyp(b"heim", b"mif1"), "HEIC"),
        (_ftyp(b"mif2", b"mif1"), "HEIF"),
        (_ftyp(b"avio", b"avif"), "AVIF"),
        (_ftyp(b"MA1B", b"avif", b"mif1"), "AVIF"),  # AVIF named among the compatible brands
    ],
)
def test_a_phone_photo_format_is_named_not_called_no_image(data: bytes, name: str) -> None:
    """HEIC and AVIF with other brands than the six first listed were 400 "not an image"
    instead of 415 naming the format, which tells a phone client what to send (s50)."""
    with pytest.raises(UnsupportedMediaError, match=name) as e:
        decode_image(data)
    assert e.value.http_status == 415


def test_an_svg_is_named() -> None:
    for data in (
        b'<svg xmlns="http://www.w3.org/2000/svg"/>',
        b'\xef\xbb\xbf<?xml version="1.0"?>\n<svg/>',
    ):
        with pytest.raises(UnsupportedMediaError, match="SVG"):
            decode_image(data)
    with pytest.raises(InvalidImageError):  # XML that is no SVG: no image at all
        decode_image(b'<?xml version="1.0"?><note>red dress</note>')


def test_an_mp4_is_no_image() -> None:
    with pytest.raises(InvalidImageError):  # an ftyp box naming no image brand
        decode_image(_ftyp(b"isom", b"isom", b"mp41"))


def test_text_that_starts_like_a_signature_is_not_an_image() -> None:
    with pytest.raises(InvalidImageError) as e:
        decode_image(b"BMW convertible, red, 2019 model, low mileage" * 3)
    assert e.value.code == "not_an_image"


def test_pixel_limit_checked_before_decoding() -> None:
    # 9000x9000 1-bit PNG: tiny on disk, 81 MP when decoded — a decompression bomb.
    bomb = encode(Image.new("1", (9000, 9000)), "PNG")
    assert len(bomb) < 200_000
    start = time.process_time()
    with pytest.raises(ImageTooLargeError, match="pixels") as e:
        decode_image(bomb)
    assert time.process_time() - start < 0.5  # refused from the header, not after decoding
    assert e.value.http_status == 413


def test_byte_limit() -> None:
    data = encode(garment_image(), "PNG")
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(data, limits=ImageLimits(max_bytes=len(data) - 1))


@pytest.mark.parametrize("size", [(8, 161), (161, 8), (100, 2001)])
def test_aspect_ratio_limit(size: tuple[int, int]) -> None:
    data = encode(Image.new("RGB", size), "PNG")
    start = time.process_time()
    with pytest.raises(InvalidImageError) as e:
        decode_image(data)
    assert time.process_time() - start < 0.5  # refused from the header
    assert e.value.code == "image_aspect_ratio" and e.value.http_status == 400
    width, height = size
    long, short = max(size), min(size)
    assert decode_image(data, limits=ImageLimits(max_aspect_ratio=long / short)).size == (
        width,
        height,
    )


def test_twenty_to_one_is_accepted() -> None:
    assert decode_image(encode(Image.new("RGB", (8, 160)), "PNG")).size == (8, 160)
    assert decode_image(encode(Image.new("RGB", (4480, 224)), "JPEG")).size == (4480, 224)


def test_pixels_per_byte_limit() -> None:
    # 4.4 MP of flat white in lossless WebP is ~40 bytes: a bomb, refused from the header.
    bomb = encode(Image.new("RGB", (4000, 1100), (255, 255, 255)), "WEBP", lossless=True)
    with pytest.raises(ImageTooLargeError) as e:
        decode_image(bomb)
    assert e.value.code == "image_too_compressed" and e.value.http_status == 413
    # The same compression below the pixel floor is always fine.
    small = encode(Image.new("RGB", (2000, 2000), (255, 255, 255)), "WEBP", lossless=True)
    assert len(small) < 1000 and decode_image(small).size == (2000, 2000)
    assert decode_image(bomb, limits=ImageLimits(pixels_per_byte_floor=5_000_000)).size == (
        4000,
        1100,
    )


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("JPEG", {"quality": 75}), ("PNG", {}), ("WEBP", {"quality": 50})],
)
def test_flat_product_shots_pass_the_pixels_per_byte_limit(
    fmt: str, options: dict[str, object]
) -> None:
    """A flat garment on a flat background, 4.8 MP: about as compressible as a real shot gets."""
    data = encode(garment_image(size=(2400, 2000)), fmt, **options)
    assert 2400 * 2000 / len(data) > 50  # really compressible, not a noisy photo
    assert min(decode_image(data, min_size=224).size) >= 224


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


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_an_orientation_in_xmp_alone_is_applied(fmt: str) -> None:
    # Pillow reads an orientation from XMP when no EXIF block holds one (JPEG's APP1 XMP and
    # WebP's chunk as info["xmp"], PNG's iTXt as info["XML:com.adobe.xmp"])
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        '22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    img = garment_image(size=(300, 200))
    if fmt == "PNG":
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp)
        data = encode(img, fmt, pnginfo=info)
    else:
        data = encode(img, fmt, xmp=xmp.encode())
    assert decode_image(data).size == (200, 300)
    assert decode_image(encode(img, fmt)).size == (300, 200)  # no metadata: as stored


def tiff_ifd(entries: list[tuple[int, int, int, bytes]], big_endian: bool = False) -> bytes:
    """A TIFF-structured EXIF block: IFD0 of (tag, type, count, 4 value bytes) entries."""
    e = ">" if big_endian else "<"
    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "IH", 8, len(entries))
    rows = b"".join(struct.pack(e + "HHI", t, kind, n) + value for t, kind, n, value in entries)
    return head + rows + b"\x00" * 4


def orientation_entry(value: int, big_endian: bool = False, kind: int = 3) -> tuple:
    e = ">" if big_endian else "<"
    packed = struct.pack(e + "HH", value, 0) if kind == 3 else struct.pack(e + "I", value)
    return (0x0112, kind, 1, packed)


def png_with_exif(block: bytes, size: tuple[int, int] = (300, 200)) -> bytes:
    data = encode(garment_image(size=size), "PNG")
    return data[:33] + png_chunk(b"eXIf", block) + data[33:]  # after IHDR


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("container", ["JPEG", "PNG", "WEBP", "PNG hex text"])
@pytest.mark.parametrize("big_endian", [False, True])
def test_every_orientation_turns_the_photo_as_pillow_does(
    orientation: int, container: str, big_endian: bool
) -> None:
    # The orientation is read by StyGig's own one-tag reader; the pixels must be those of
    # Pillow's exif_transpose, in every container and byte order.
    from PIL import ImageOps

    block = tiff_ifd(
        [(0x010F, 2, 4, b"Cam\x00"), orientation_entry(orientation, big_endian)], big_endian
    )
    img = garment_image(size=(90, 60))
    img.paste((0, 0, 255), (0, 0, 20, 10))  # a corner mark: flips and turns differ
    if container == "PNG hex text":
        info = PngImagePlugin.PngInfo()
        info.add_text(
            "Raw profile type exif", f"\nexif\n{len(block):8d}\n{block.hex()}\n", zip=True
        )
        data = encode(img, "PNG", pnginfo=info)
    else:
        data = encode(
            img,
            container,
            exif=b"Exif\x00\x00" + block,
            **(
                {"lossless": True}
                if container == "WEBP"
                else {"quality": 100}
                if container == "JPEG"
                else {}
            ),
        )
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB"))
    out = decode_image(data)
    assert out.size == expected.size
    diff = np.abs(np.asarray(out, np.int16) - np.asarray(expected, np.int16))
    assert diff.mean() < 3  # JPEG's colour management round trip aside, the same pixels


def test_an_orientation_stored_as_a_long_is_applied() -> None:
    block = tiff_ifd([orientation_entry(6, kind=4)])
    assert decode_image(png_with_exif(block)).size == (200, 300)


@pytest.mark.parametrize("kind", ["PNG", "JPEG in several segments"])
def test_hostile_exif_is_never_parsed_whole(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # 60,000 tags with an orientation cost 1.4 s of CPU a photo in Pillow's EXIF parser and
    # writer (8 such photos: 13.5 s for one /v1/recommend, audit of session 46). StyGig reads
    # its one tag itself, and drops a JPEG's EXIF whose first IFD is far beyond a camera's.
    filler = [(0x1000 + i, 3, 1, b"\x01\x00\x00\x00") for i in range(60_000)]
    block = tiff_ifd(sorted([orientation_entry(6), *filler]))
    if kind == "PNG":
        data, turned = png_with_exif(block), (200, 300)
    else:
        plain = encode(garment_image(size=(300, 200)), "JPEG")
        assert plain[2:4] == b"\xff\xe0"  # drop the JFIF header: Pillow then reads EXIF at open
        plain = plain[:2] + plain[4 + int.from_bytes(plain[4:6], "big") :]
        parts = [block[i : i + 65_000] for i in range(0, len(block), 65_000)]
        app1 = b"".join(
            b"\xff\xe1" + (len(p) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + p for p in parts
        )
        data, turned = plain[:2] + app1 + plain[2:], (300, 200)  # dropped: not turned

    def whole_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow's EXIF parser was called")

    monkeypatch.setattr(Image.Exif, "load", whole_parse)
    assert decode_image(data).size == turned
    monkeypatch.undo()
    small = tiff_ifd([orientation_entry(6), *filler[:50]])
    assert decode_image(png_with_exif(small)).size == (200, 300)  # an ordinary block still is


def test_bad_metadata_prints_nothing() -> None:
    # One warning per bad EXIF tag, on every request (a 64 KB JPEG: 2.4 MB of log), and
    # Pillow's "malformed MPO" note, were printed to stderr, outside the JSON log.
    script = textwrap.dedent(
        """
        import io, struct, sys
        from PIL import Image
        from stygig.images import decode_image
        rows = [struct.pack("<HHII", 0x1000 + i, 7, 16000, 900) for i in range(900)]
        block = b"II*\\x00" + struct.pack("<IH", 8, 900) + b"".join(rows) + b"\\x00" * 4
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "JPEG", exif=b"Exif\\x00\\x00" + block)
        data = buf.getvalue()
        data = data[:2] + data[4 + int.from_bytes(data[4:6], "big"):]  # no JFIF: EXIF read at open
        for _ in range(3):
            assert decode_image(data).size == (64, 64)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""


@pytest.mark.slow
def test_a_16_bit_colour_key_is_read_within_the_decode_estimate() -> None:
    """Audit, session 46: a 37 KB 16-bit grey PNG with a tRNS key held 214 MiB (an int64
    array of the full image) where the decode budget counted 96 MiB; six clients took a
    server from 416 to 1,206 MiB. The peak growth must stay within decode_bytes."""
    script = textwrap.dedent(
        """
        import io, resource, struct, zlib
        from PIL import Image
        from stygig.images import decode_bytes, decode_image
        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        side = 4000
        # the left half is the key (transparent), the right half mid-grey
        row = b"\\x00" + b"\\x12\\x34" * (side // 2) + b"\\x80\\x00" * (side // 2)
        rows = zlib.compress(row * side, 9)
        data = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0))
                + chunk(b"tRNS", struct.pack(">H", 0x1234)) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
        estimate = decode_bytes(Image.open(io.BytesIO(data)), 224)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
        out = decode_image(data, min_size=224)
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10) - before
        grey = out.convert("L")
        print(round(grew / estimate, 2), grey.getpixel((0, 0)), grey.getpixel((out.width - 1, 0)))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ratio, left, right = done.stdout.split()
    assert float(ratio) <= 1.0, done.stdout
    assert (left, right) == ("255", "128"), done.stdout  # the key on white; 0x8000 as 128


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


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_large_png_and_webp_are_reduced_when_min_size_allows(fmt: str) -> None:
    data = encode(garment_image(size=(1200, 1600)), fmt)
    reduced = decode_image(data, min_size=224)
    assert reduced.size == (240, 320)  # a 5x box reduction; both sides stay >= 224
    assert np.asarray(reduced)[160, 120, 0] > 150  # the red garment survived
    assert decode_image(data).size == (1200, 1600)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_applied_after_reduction(fmt: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    data = encode(garment_image(size=(1600, 1200)), fmt, exif=exif.tobytes())
    # JPEG: DCT-scaled to 200 x 150, then reduced 4x; PNG: reduced 37x. Portrait either way.
    width, height = decode_image(data, min_size=32).size
    assert 32 <= width < 64 and 32 < height < 64 and width < height


def test_reduced_transparent_and_sixteen_bit_pngs_are_converted() -> None:
    rgba = Image.new("RGBA", (1000, 1000), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (250, 250, 750, 750))
    arr = np.asarray(decode_image(encode(rgba, "PNG"), min_size=224))
    assert arr.shape == (250, 250, 3)
    assert tuple(arr[0, 0]) == (255, 255, 255) and tuple(arr[125, 125]) == (0, 0, 255)
    sixteen = Image.fromarray(np.full((1000, 1000), 65535 // 2, dtype=np.uint16))
    out = decode_image(encode(sixteen, "PNG"), min_size=224)
    assert out.size == (250, 250) and abs(int(np.asarray(out)[0, 0, 0]) - 127) <= 1


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


def peak_growth_mb(setup: str, call: str) -> float:
    """Peak resident memory (MB) a fresh interpreter adds while running ``call`` after ``setup``.

    A separate process, so memory freed by earlier tests cannot hide an allocation; the peak
    (VmHWM) is reset just before ``call``, and freed heap is returned to the system first.
    """
    code = textwrap.dedent(
        """
        import ctypes, gc, io
        import numpy as np
        from PIL import Image
        from stygig.images import PreprocessSpec, decode_image, fit_array, preprocess
        from stygig.thumbnails import make_thumbnail

        def status(key):
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith(key))

        {setup}
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS")
        result = {call}
        print((status("VmHWM") - before) / 1024)
        """
    ).format(setup=setup, call=call)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not LINUX_PROC, reason="peak memory is read from /proc")
@pytest.mark.parametrize(
    ("mode", "copy_mb"),
    [("RGBA", 64), ("I;16", 32)],  # 4000 x 4000: Pillow keeps RGBA in 4 bytes, 16-bit in 2
)
@pytest.mark.slow
def test_a_large_png_is_reduced_before_it_is_converted(mode: str, copy_mb: int) -> None:
    """A 16 MP (the most a PNG may have) transparent or 16-bit PNG going to a 224 input: the
    decoded image plus at most two full-size buffers, not one or more per conversion step (the
    peak was 5 to 12 copies)."""
    setup = (
        f"buf = io.BytesIO(); Image.new({mode!r}, (4000, 4000)).save(buf, 'PNG'); "
        "data = buf.getvalue()"
    )
    assert peak_growth_mb(setup, "decode_image(data, min_size=224)") < 3 * copy_mb


@pytest.mark.skipif(not LINUX_PROC, reason="peak memory is read from /proc")
@pytest.mark.parametrize("size", [(1400, 28000), (28000, 1400)])
@pytest.mark.parametrize(
    "call",
    [
        "preprocess(img, PreprocessSpec())",
        "preprocess(img, PreprocessSpec(resize='squash'))",
        "fit_array(img, 128)",
        "make_thumbnail(img)",
    ],
)
@pytest.mark.slow
def test_resizes_are_bounded_by_their_output(size: tuple[int, int], call: str) -> None:
    """A 20:1 photo (the most elongated accepted, 157 MB decoded): each resize costs a few MB,
    however long the long side (the centre crop used to resize the whole strip first)."""
    setup = f"img = Image.new('RGB', {size}, (200, 30, 30))"
    assert peak_growth_mb(setup, call) < 10


# --- Structure: decode work that neither pixels nor bytes bound ----------------------------------


def progressive_bomb(side: int, extra_scans: int, separator: bytes = b"") -> bytes:
    """A grey progressive JPEG (6 scans) with its last scan repeated ``extra_scans`` times.

    The last scan is an AC refinement of a flat image, ~15 bytes, and libjpeg decodes every
    repeat over the whole image: a scan bomb. ``separator`` goes before each repeat.
    """
    data = encode(Image.new("L", (side, side), 128), "JPEG", progressive=True, quality=90)
    # The last SOS marker up to EOI: entropy-coded data never holds FF DA (0xFF is stuffed).
    last_scan = data[data.rindex(b"\xff\xda") : -2]
    return data[:-2] + (separator + last_scan) * extra_scans + b"\xff\xd9"


def test_a_scan_bomb_is_refused_before_decoding() -> None:
    """1 MP and 32 KB, within every pixel and byte limit: 2,006 scans took ~1.5 s to decode
    (a 6000 x 6000 one of 259 KB took 44 s)."""
    bomb = progressive_bomb(1000, 2000)
    start = time.process_time()
    with pytest.raises(ImageTooLargeError) as e:
        decode_image(bomb, min_size=224)
    assert time.process_time() - start < 0.5
    assert e.value.code == "image_too_many_scans" and e.value.http_status == 413
    assert "100 scans" in e.value.message


def test_the_scan_limit_counts_each_scan_once() -> None:
    assert decode_image(progressive_bomb(64, 94)).size == (64, 64)  # 100 scans: a valid image
    with pytest.raises(ImageTooLargeError, match="scans"):
        decode_image(progressive_bomb(64, 95))


def test_the_scan_limit_shrinks_with_the_image_size() -> None:
    """100 scans were allowed at any size: a 0.47 MB progressive JPEG of 40 MP took 3.1 s of
    CPU. Scans x pixels is bounded too (500 M by default: 86 scans at 2400 x 2400)."""
    limits = ImageLimits(max_jpeg_scan_pixels=64 * 64 * 20)
    assert decode_image(progressive_bomb(64, 14), limits=limits).size == (64, 64)  # 20 scans
    with pytest.raises(ImageTooLargeError, match="more than 20 scans"):
        decode_image(progressive_bomb(64, 15), limits=limits)
    bomb = progressive_bomb(2400, 81)  # 87 scans
    start = time.process_time()
    with pytest.raises(ImageTooLargeError, match="more than 86 scans") as e:
        decode_image(bomb)
    assert time.process_time() - start < 0.5
    assert e.value.code == "image_too_many_scans"
    # A baseline photo (one scan) of any size gets to the pixel limit, which names the problem.
    baseline = bytearray(encode(Image.new("L", (64, 64)), "JPEG"))
    sof = baseline.index(b"\xff\xc0")
    baseline[sof + 5 : sof + 9] = b"\xff\xff\xff\xff"  # 65,535 x 65,535
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(bytes(baseline))


@pytest.mark.parametrize(
    ("mode", "options", "scans"),
    [
        ("RGB", {}, 1),
        ("RGB", {"restart_marker_blocks": 1}, 1),
        ("L", {"progressive": True}, 6),
        ("RGB", {"progressive": True}, 10),
        ("RGB", {"progressive": True, "restart_marker_blocks": 1}, 10),
        ("CMYK", {"progressive": True}, 18),
    ],
    ids=["baseline", "baseline-restarts", "grey", "colour", "colour-restarts", "cmyk"],
)
def test_encoders_scans_pass_and_are_counted_exactly(
    mode: str, options: dict[str, object], scans: int
) -> None:
    """libjpeg's scripts write 1, 6, 10 or 18 scans, far under the limit of 100; restart
    markers inside a scan are part of it, not segments."""
    data = encode(Image.new(mode, (64, 64)), "JPEG", **options)
    assert decode_image(data).size == (64, 64)
    assert decode_image(data, limits=ImageLimits(max_jpeg_scans=scans)).size == (64, 64)
    with pytest.raises(ImageTooLargeError, match="scans"):
        decode_image(data, limits=ImageLimits(max_jpeg_scans=scans - 1))
    assert decode_image(data, limits=ImageLimits(max_jpeg_segments=40)).size == (64, 64)


def test_only_the_first_frame_of_an_mpo_counts() -> None:
    """Decoding stops at the first EOI; an MPO's other frames are never decoded."""
    frame = garment_image(size=(64, 64))
    data = encode(frame, "MPO", save_all=True, append_images=[frame, frame], progressive=True)
    assert data.count(b"\xff\xda") == 30  # 3 frames of 10 scans
    img = decode_image(data, limits=ImageLimits(max_jpeg_scans=10))
    assert img.size == (64, 64)


def test_marker_bytes_inside_segments_are_not_markers() -> None:
    """Segments are skipped by their length: a comment (or EXIF thumbnail) full of SOS markers
    holds no scans."""
    data = encode(garment_image(), "JPEG", comment=b"\xff\xda\x00\x08" * 10_000)
    limits = ImageLimits(max_jpeg_scans=1, max_jpeg_segments=20)
    assert decode_image(data, limits=limits).size == (224, 224)


@pytest.mark.parametrize(
    "separator",
    [b"\xff\xff\xff", b"\xff\xd3", b"junk\xff\x00"],
    ids=["fill-bytes", "restart-marker", "junk"],
)
def test_fill_restarts_and_junk_do_not_hide_scans(separator: bytes) -> None:
    """libjpeg finds a marker after fill bytes, RSTn and junk; so does the walk."""
    bomb = progressive_bomb(64, 200, separator)
    with pytest.raises(ImageTooLargeError) as e:
        decode_image(bomb)
    assert e.value.code == "image_too_many_scans"


def test_too_many_segments_are_refused() -> None:
    """Pillow parses the header's markers in Python: 20 MB of empty comments took 4.6 s and
    400 MB before anything else was checked."""
    good = encode(garment_image(), "JPEG")
    bomb = good[:2] + b"\xff\xfe\x00\x02" * 5_000 + good[2:]
    with pytest.raises(ImageTooLargeError) as e:
        decode_image(bomb)
    assert e.value.code == "image_too_many_segments" and e.value.http_status == 413
    assert decode_image(bomb, limits=ImageLimits(max_jpeg_segments=5_100)).size == (224, 224)


def test_a_junk_filled_jpeg_header_is_refused() -> None:
    """Pillow steps over junk before the first scan one byte at a time in Python (20 MB of
    fill bytes: 7 s). A little is tolerated, as libjpeg and Pillow do."""
    good = encode(garment_image(), "JPEG")
    after_app0 = 4 + int.from_bytes(good[4:6], "big")
    a_little = good[:after_app0] + b"\x00" * 1_000 + good[after_app0:]
    assert decode_image(a_little).size == (224, 224)
    for junk in (b"\x00", b"\xff"):
        bomb = good[:after_app0] + junk * 70_000 + good[after_app0:]
        with pytest.raises(InvalidImageError) as e:
            decode_image(bomb)
        assert e.value.code == "image_malformed_header" and e.value.http_status == 400


def test_a_second_frame_header_is_refused_before_pillow_parses_it() -> None:
    """libjpeg refuses a second SOF, but Pillow parsed them all first, in Python: 6 MB of them
    took 0.5 s and +200 MB (a list entry for each 3 bytes)."""
    good = encode(garment_image(), "JPEG")
    start = good.index(b"\xff\xc0")
    sof = good[start : start + 2 + int.from_bytes(good[start + 2 : start + 4], "big")]
    payload = b"\x08\x00\x40\x00\x40\x03" + b"\x01\x11\x00" * 21_800
    huge_sof = b"\xff\xc2" + struct.pack(">H", 2 + len(payload)) + payload
    for extra in (sof, huge_sof):
        with pytest.raises(InvalidImageError) as e:
            decode_image(good[:2] + extra + good[2:])
        assert e.value.code == "image_malformed_header"


MALFORMED_JPEGS = [
    b"\xff\xd8\xff",  # a marker cut off
    b"\xff\xd8\xff\xda",  # SOS without its length
    b"\xff\xd8\xff\xda\x00",  # half a length
    b"\xff\xd8\xff\xe0\x00\x00\xff\xda\x00\x01",  # lengths under 2
    b"\xff\xd8\xff\xe0\xff\xff\x00\x10",  # a length past the end
    b"\xff\xd8\xff\xd8\xff\xd8\xff\xd9",  # SOI again
    b"\xff\xd8\xff\xda\x00\x02" + b"\xff" * 100,  # a scan of fill bytes only
    b"\xff\xd8\xff\x01\xff\x01" + b"\xff\x00" * 50,  # TEM markers, stuffed bytes
]


@pytest.mark.parametrize("data", MALFORMED_JPEGS)
def test_malformed_jpeg_structure_is_reported_as_corrupt(data: bytes) -> None:
    with pytest.raises(InvalidImageError) as e:
        decode_image(data)
    assert e.value.code in ("invalid_image", "not_an_image")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_and_mutated_files_never_crash(fmt: str) -> None:
    """Every prefix and 300 random byte changes of a small file: an image or a StyGig error."""
    options: dict[str, object] = {"progressive": True} if fmt == "JPEG" else {}
    data = encode(garment_image(size=(48, 48)), fmt, **options)
    rng = random.Random(0)
    mutated = []
    for _ in range(300):
        copy = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            copy[rng.randrange(2, len(copy))] = rng.choice(
                (0x00, 0xFF, 0xDA, 0xD9, rng.randrange(256))
            )
        mutated.append(bytes(copy))
    for candidate in [data[:cut] for cut in range(1, len(data))] + mutated:
        try:
            decode_image(candidate)
        except StygigError as e:
            assert isinstance(e, InvalidImageError | ImageTooLargeError), type(e)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with_chunks(extra: bytes, size: tuple[int, int] = (64, 64)) -> bytes:
    """A small PNG with the chunks ``extra`` right after its header (IHDR)."""
    data = encode(garment_image(size=size), "PNG")
    return data[:33] + extra + data[33:]  # signature (8) + IHDR (25)


def test_a_png_with_too_many_chunks_is_refused() -> None:
    """Pillow reads every chunk in Python and keeps the private ones: 20 MB of empty chunks
    took 6 s and 200 MB."""
    bomb = png_with_chunks(png_chunk(b"prIv", b"") * 50_000)
    with pytest.raises(ImageTooLargeError) as e:
        decode_image(bomb)
    assert e.value.code == "image_too_many_chunks" and e.value.http_status == 413
    assert decode_image(bomb, limits=ImageLimits(max_png_chunks=50_010)).size == (64, 64)


# Each ~1 KB, inflated by Pillow to 1 MB (~2 ms), and none of them counted by Pillow's text
# memory limit: an ICC profile, text with an empty keyword, international text not in UTF-8.
_MEGABYTE_OF_ZEROS = zlib.compress(bytes(1 << 20), 9)
COMPRESSED_CHUNKS = {
    "iCCP": png_chunk(b"iCCP", b"icc\x00\x00" + _MEGABYTE_OF_ZEROS),
    "zTXt": png_chunk(b"zTXt", b"\x00\x00" + _MEGABYTE_OF_ZEROS),
    "iTXt": png_chunk(b"iTXt", b"k\x00\x01\x00\x00\x00" + zlib.compress(b"\xff" * (1 << 20), 9)),
}


@pytest.mark.parametrize("kind", sorted(COMPRESSED_CHUNKS))
def test_a_png_of_compressed_chunks_is_refused_before_inflating(kind: str) -> None:
    """20 MB of such chunks took 45 s to open; 200 of them (200 KB) took ~0.5 s."""
    bomb = png_with_chunks(COMPRESSED_CHUNKS[kind] * 200)
    start = time.process_time()
    with pytest.raises(ImageTooLargeError) as e:
        decode_image(bomb)
    assert time.process_time() - start < 0.2
    assert e.value.code == "image_too_many_chunks" and "compressed" in e.value.message


def test_png_metadata_passes() -> None:
    """A profile and a few text chunks, compressed or not, as editors write them."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "an editor")
    info.add_text("Comment", "a long comment " * 100, zip=True)
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>" * 100, zip=True)
    data = encode(garment_image(), "PNG", pnginfo=info, icc_profile=b"\x00" * 5_000)
    assert data.count(b"zTXt") == data.count(b"iTXt") == data.count(b"iCCP") == 1
    assert decode_image(data).size == (224, 224)
    with pytest.raises(ImageTooLargeError):
        decode_image(data, limits=ImageLimits(max_png_compressed_chunks=2))


def test_only_the_first_frame_of_an_animated_webp_is_decoded() -> None:
    """An animated WebP costs its first frame, however many follow: 3,000 frames of 1 MP would
    take seconds to decode (guards against decoding, or compositing, every frame)."""
    frames = [Image.new("RGB", (1000, 1000), colour) for colour in ((200, 30, 30), (30, 30, 200))]
    anim = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    last_frame = anim[anim.rindex(b"ANMF") :]  # the last chunk
    body = anim[12:] + last_frame * 3_000
    data = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.n_frames == 3_002
    start = time.process_time()
    img = decode_image(data, min_size=224)
    assert time.process_time() - start < 1.0
    assert img.getpixel((img.width // 2, img.height // 2)) == (200, 30, 30)


@pytest.mark.parametrize("kind", ["animated", "lossless", "lossy"])
def test_a_webp_canvas_is_checked_before_libwebp_allocates_it(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit, session 46: a 120-byte animated WebP declaring a 13000 x 13000 canvas made
    libwebp reserve ~680 MB while Pillow read the header, and near a memory cap it was then
    answered 400 "corrupt" instead of 413. The canvas is now read from the bytes first."""
    small = Image.new("RGB", (16, 16), (200, 30, 30))
    if kind == "animated":
        other = Image.new("RGB", (16, 16), (30, 30, 200))
        data = bytearray(encode(small, "WEBP", save_all=True, append_images=[other], duration=50))
        assert data[12:16] == b"VP8X"
        data[24:30] = (13000 - 1).to_bytes(3, "little") * 2  # the canvas, minus one per side
    elif kind == "lossless":
        data = bytearray(encode(small, "WEBP", lossless=True))
        assert data[12:16] == b"VP8L"
        bits = (16000 - 1) | (16000 - 1) << 14 | (int.from_bytes(data[21:25], "little") >> 28) << 28
        data[21:25] = bits.to_bytes(4, "little")
    else:
        data = bytearray(encode(small, "WEBP", quality=80))
        assert data[12:16] == b"VP8 "
        data[26:30] = (16000).to_bytes(2, "little") * 2
    opened: list[bytes] = []
    monkeypatch.setattr("stygig.images._open", lambda body: opened.append(body))
    with pytest.raises(ImageTooLargeError) as e:
        decode_image(bytes(data))
    assert e.value.http_status == 413 and opened == []
    monkeypatch.undo()
    # A small WebP's header is still read (the page lists such an example photo; review, s47)
    from stygig.images import read_header

    header = read_header(encode(small, "WEBP"))
    assert header is not None and (header.width, header.height) == (16, 16)


@pytest.mark.shared_data
def test_real_photos_pass_the_structure_limits() -> None:
    """Every catalogue photo (6,617 + 9,248 JPEGs; 1 or 10 scans, up to 29 segments) passes.

    ``max_pixels=1`` stops each decode right after the header, so a photo that gets past the
    structure limits is refused for its pixels instead, at the cost of a header parse.
    """
    limits = ImageLimits(max_pixels=1)
    photos = [
        *(require_dataset(KAGGLE_DIR) / "images").glob("*.jpg"),
        *(require_dataset(MANGO_DIR) / "images").glob("*.jpg"),
    ]
    assert len(photos) > 10_000
    for photo in photos:
        with pytest.raises(ImageTooLargeError) as e:
            decode_image(photo, limits=limits)
        assert e.value.code == "image_too_large", photo.name


@pytest.mark.slow
def test_png_and_webp_from_clients_are_bounded_lower_than_a_catalogues_own(
    tmp_path: Path,
) -> None:
    """PNG and WebP are decoded whole: 16 MP at most from a client (a 20 MP one would cost
    ~0.3 s of CPU for ~60 KB sent), the full 40 MP from the operator's catalogue at build."""
    from stygig.build import prepare_item_photo, prepare_or_reject
    from stygig.errors import ImageTooLargeError
    from stygig.features import PreparedImage
    from tests.security.test_image_bombs import wide_png

    spec = PreprocessSpec(size=224)
    with pytest.raises(ImageTooLargeError) as caught:
        prepare_item_photo(wide_png(), spec)  # a living catalogue's change: a client's photo
    assert "PNG or WebP" in caught.value.message
    path = tmp_path / "master.png"
    path.write_bytes(wide_png())
    assert isinstance(prepare_or_reject(str(path), spec), PreparedImage)
    # 16 MP is fine from anyone.
    buf = io.BytesIO()
    Image.new("RGB", (4000, 4000), (200, 30, 30)).save(buf, "PNG", compress_level=1)
    decode_image(buf.getvalue(), min_size=224)


# -- review, session 38: decode memory, colour keys, metadata that is not pixels --------------


def _jpeg(size: tuple[int, int], **save: object) -> bytes:
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    img = Image.fromarray(noise).resize(size, Image.Resampling.BILINEAR)
    return encode(img, "JPEG", quality=90, **save)


def test_a_progressive_jpeg_is_bounded_by_its_coefficient_memory() -> None:
    """A progressive JPEG keeps every DCT coefficient of the whole image however small the
    output (a 311 KB 40 MP CMYK file held 307 MB): its estimate counts them and is bounded;
    the same photo as a baseline JPEG, reduced in libjpeg, costs a few MB."""
    from stygig.images import decode_bytes

    progressive = _jpeg((2000, 2000), progressive=True, subsampling=0)
    baseline = _jpeg((2000, 2000), subsampling=0)
    tight = ImageLimits(max_decode_bytes=16 << 20)
    with pytest.raises(ImageTooLargeError) as e:
        decode_image(progressive, min_size=224, limits=tight)
    assert e.value.code == "image_decode_too_large" and e.value.http_status == 413
    assert decode_image(baseline, min_size=224, limits=tight).size == (250, 250)
    cost = decode_bytes(Image.open(io.BytesIO(progressive)), 224, scans=10)
    assert 2000 * 2000 // 64 * 3 * 128 <= cost < 30 << 20  # 3 channels of 62,500 blocks


@pytest.mark.skipif(not LINUX_PROC, reason="peak memory is read from /proc")
@pytest.mark.parametrize(
    "make",
    [
        "Image.new('RGB', (4000, 3000), (200, 30, 30)).save(buf, 'JPEG', progressive=True, "
        "subsampling=0)",
        "Image.new('RGBA', (4000, 3000), (200, 30, 30, 90)).save(buf, 'PNG')",
        "Image.radial_gradient('L').resize((3000, 3000)).convert('RGB').save(buf, 'WEBP', "
        "lossless=True)",
    ],
)
@pytest.mark.slow
def test_the_decode_estimate_covers_the_measured_peak(make: str) -> None:
    """What the limit and the shared budget count is at least what a decode holds."""
    from stygig.images import decode_bytes

    setup = f"buf = io.BytesIO(); {make}; data = buf.getvalue()"
    peak = peak_growth_mb(setup, "decode_image(data, min_size=224)")
    buf = io.BytesIO()
    eval(make, {"Image": Image, "buf": buf})
    img = Image.open(io.BytesIO(buf.getvalue()))
    estimate = decode_bytes(img, 224, scans=10 if img.info.get("progressive") else 1) / 2**20
    assert peak <= estimate, (peak, estimate)


def test_large_decodes_share_one_budget_and_a_late_one_is_told_to_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads x the largest decode was the bound (8 x 300 MB under a 3 GB cap: 500s). The
    larger decodes share one budget; one that finds no room in time is a 503, not a crash."""
    from stygig import images
    from stygig.errors import OverloadedError

    monkeypatch.setattr(images, "DECODE_WAIT_S", 0.3)
    budget = images._DecodeBudget(100 << 20)
    big = 60 << 20
    failed: list[BaseException] = []

    def second() -> None:
        try:
            with budget.hold(big):
                pass
        except BaseException as e:
            failed.append(e)

    with budget.hold(big):
        with budget.hold(images.SMALL_DECODE_BYTES - 1):  # small ones never wait
            pass
        worker = threading.Thread(target=second)
        worker.start()
        worker.join(30)
    assert len(failed) == 1 and isinstance(failed[0], OverloadedError)
    assert failed[0].http_status == 503
    with budget.hold(big), budget.hold(40 << 20):
        assert budget.held == 100 << 20  # room again once the first is done
    assert budget.held == 0


def test_memory_running_out_while_decoding_is_a_503_not_a_corrupt_photo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stygig.errors import OverloadedError

    def no_memory(self: Image.Image) -> None:
        raise MemoryError

    data = encode(garment_image(), "PNG")
    monkeypatch.setattr(Image.Image, "load", no_memory)
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_memory)
    with pytest.raises(OverloadedError):
        decode_image(data)


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
def test_a_colour_key_is_transparency(mode: str) -> None:
    """A PNG whose background is transparent by a colour key (tRNS: what optipng and oxipng
    write for a cut-out) was read with that key's colour (black) as the background, and
    answered differently from the same picture with alpha. Composited on white now."""
    size = (64, 64)
    if mode == "I;16":
        img = Image.new("I;16", size, 0)
        img.paste(40000, (16, 16, 48, 48))
        key: object = 0
    else:
        img = Image.new(mode, size, 0 if mode == "L" else (0, 0, 0))
        img.paste(200 if mode == "L" else (200, 30, 30), (16, 16, 48, 48))
        key = 0 if mode == "L" else (0, 0, 0)
    data = encode(img, "PNG", transparency=key)
    out = np.asarray(decode_image(data))
    assert (out[0, 0] == 255).all() and (out[-1, -1] == 255).all()  # background: white
    # The garment is kept, in its own colour (a 16-bit grey one came out (156, 0, 0): s50).
    if mode == "I;16":  # grey, whatever Pillow made of 40000 when it wrote the file
        assert out[32, 32, 0] == out[32, 32, 1] == out[32, 32, 2] < 250
    else:
        assert tuple(out[32, 32]) == ((200, 30, 30) if mode == "RGB" else (200, 200, 200))


def _png16(pixels: np.ndarray, colour_type: int, *chunks: bytes) -> bytes:
    """A 16-bit PNG of ``pixels`` (uint16, grey or RGB) with ``chunks`` before its data."""
    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    head = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", head) + b"".join(chunks)
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))  # fmt: skip


def test_a_16_bit_rgb_colour_key_is_compared_at_16_bits() -> None:
    """Pillow reads 16-bit RGB as its high bytes but keeps the tRNS key's 16 bits: the key was
    compared with the 8-bit pixels, so the key's own background stayed and an opaque garment
    whose high bytes equal the key's number vanished (review, session 50)."""
    for key, garment in (
        ((0x1234, 0x5678, 0x9ABC), (0xFFFF, 0, 0)),
        ((0xFF, 0, 0), (0xFFFF, 0, 0)),
    ):
        pixels = np.empty((64, 64, 3), np.uint16)
        pixels[:] = key
        pixels[16:48, 16:48] = garment
        trns = png_chunk(b"tRNS", struct.pack(">HHH", *key))
        out = np.asarray(decode_image(_png16(pixels, 2, trns)))
        assert tuple(out[0, 0]) == (255, 255, 255)  # the key: transparent, on white
        assert tuple(out[32, 32]) == (255, 0, 0)  # the garment: opaque red


def test_a_16_bit_grey_photo_with_a_colour_key_keeps_its_orientation() -> None:
    """The 16-bit grey + tRNS path makes a new image, which lost the EXIF orientation: the
    photo was not turned upright (review, session 50)."""
    pixels = np.full((40, 60), 40000, np.uint16)
    pixels[:, :5] = 7  # the key
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    chunks = (png_chunk(b"tRNS", struct.pack(">H", 7)), png_chunk(b"eXIf", exif.tobytes()))
    out = decode_image(_png16(pixels, 0, *chunks))
    assert out.size == (40, 60)  # turned: 60 x 40 stored
    assert tuple(np.asarray(out)[0, 0]) == (255, 255, 255)  # the key column, now the top row


def test_metadata_that_cannot_be_read_does_not_refuse_the_pixels() -> None:
    """A PNG with a metadata chunk Pillow will not inflate (over 1 MB: XMP bloat, a huge
    profile) or an EXIF block that is not TIFF was "corrupt" (400), though its pixels are
    fine and a JPEG with the same metadata decoded."""
    huge = zlib.compress(bytes(2 << 20), 9)
    for chunk in (
        png_chunk(b"zTXt", b"XML:com.adobe.xmp\x00\x00" + huge),
        png_chunk(b"iCCP", b"profile\x00\x00" + huge),
        png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + huge),
    ):
        assert decode_image(png_with_chunks(chunk)).size == (64, 64)
    bad_exif = png_with_chunks(png_chunk(b"eXIf", b"NOT A TIFF HEADER" * 4))
    assert decode_image(bad_exif).size == (64, 64)


def test_a_png_is_bounded_by_the_bytes_of_its_rows() -> None:
    """A 132 KB 16-bit RGBA 16 MP PNG cost 0.7 s of CPU: its rows hold 8 bytes a pixel."""
    img = Image.fromarray(np.zeros((600, 600, 4), np.uint16).astype(np.uint8))
    eight = encode(img, "PNG")
    limits = ImageLimits(max_whole_decode_pixels=600 * 600)
    assert decode_image(eight, limits=limits).size == (600, 600)
    header = eight[12:24] + b"\x10" + eight[25:29]  # IHDR says 16-bit: twice the bytes
    sixteen = eight[:12] + header + struct.pack(">I", zlib.crc32(header)) + eight[33:]
    with pytest.raises(ImageTooLargeError, match="16-bit"):
        decode_image(sixteen, limits=limits)


def test_a_cursor_or_tga_is_named_as_such() -> None:
    with pytest.raises(UnsupportedMediaError, match="CUR or TGA"):
        decode_image(b"\x00\x00\x02\x00" + bytes(64))


@pytest.mark.slow
def test_a_decoder_out_of_memory_is_a_retry_not_a_corrupt_photo() -> None:
    """Review, session 42: libwebp and libjpeg report a failed allocation as an ordinary
    OSError, so a server near its memory cap answered valid photos 400 "corrupt" (which
    clients and batch jobs never retry). Under an address-space cap too low for the decode,
    a valid 16 MP WebP is a 503 to retry; without it, it decodes, and a corrupt one is a 400."""
    script = textwrap.dedent(
        """
        import io, resource, sys
        from PIL import Image
        from stygig.errors import StygigError
        from stygig.images import decode_image
        out = io.BytesIO()
        Image.new("RGB", (4000, 4000), (120, 60, 200)).save(out, "WEBP", quality=80)
        data = out.getvalue()
        decode_image(data, min_size=224)
        print("decoded")
        def attempt(body):
            try:
                decode_image(body, min_size=224)
            except StygigError as e:
                print(e.http_status, e.code)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(3):
            attempt(data[:-2000])  # cut inside its pixels
        # the probe reserves, never touches, its memory (a bytearray wrote 128 MiB each time)
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) >> 10
        print("grew", "under 32 MB" if grew < 32 else f"{grew} MB")
        size = int(open("/proc/self/statm").read().split()[0]) * 4096
        resource.setrlimit(resource.RLIMIT_AS, (size + (100 << 20), resource.RLIM_INFINITY))
        attempt(data)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split("\n")
    assert lines[:6] == [
        "decoded",
        *["400 invalid_image"] * 3,
        "grew under 32 MB",
        "503 overloaded",
    ]
