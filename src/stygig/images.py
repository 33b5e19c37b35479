"""The one place that decodes, validates and preprocesses images.

Every photo that enters StyGig — a catalogue image at build time or a shopper's upload at query
time — goes through :func:`decode_image`, so limits and conversions are the same everywhere:

* formats: JPEG (and MPO, the multi-picture JPEG phones write), PNG, WebP. Only those three of
  Pillow's parsers ever see the bytes; a GIF, TIFF, BMP, ... is recognised by its signature and
  refused with 415 without being parsed;
* limits, all checked from the header *before* decoding, so a decompression bomb costs nothing:
  bytes, pixels, the shortest side, the aspect ratio, and pixels per byte of file;
* limits on the file's structure, checked before any parser runs, for work that neither pixels
  nor bytes bound: a JPEG's scans (libjpeg decodes every scan over the whole image, so a 259 KB
  progressive JPEG of 2,000 repeated scans took 44 s) and segments, and a PNG's chunks and
  compressed chunks (Pillow inflates each iCCP, zTXt or iTXt chunk up to 1 MB: 20 MB of them
  took 45 s). A WebP costs no more than its first frame: only that frame is ever decoded;
* EXIF orientation applied; RGBA/LA/P composited on white (product shots), grey, CMYK and 16-bit
  converted to 8-bit RGB;
* colour managed: an RGB or grey photo with an embedded ICC profile (a phone's Display P3, Adobe
  RGB, ...) is converted to sRGB with LittleCMS (Pillow's ``ImageCms``), after any reduction so
  the conversion works on the small image. Untagged and sRGB-tagged photos are not touched (the
  check is one dictionary lookup per photo: each distinct profile is parsed, and recognised as
  sRGB or not, once). A profile that is malformed, over ``max_icc_profile_bytes``,
  table-based (LUT: slow to prepare, and not what cameras and phones write), or for another
  colour space than the pixels (a CMYK photo's profile included) is ignored with a logged
  warning: the photo decodes as if untagged, as a browser shows it;
* when the caller says how small the result may be (``min_size``), large images are shrunk right
  after decoding — JPEGs inside libjpeg (DCT scaling, ``Image.draft``, about 4x faster for a phone
  photo going to a 224 input), PNG and WebP by a box reduction — so no conversion works on a
  full-size copy.

Every resize after that is bounded by its *output*: :func:`preprocess` resamples only the centre
square it keeps, so even the most elongated accepted image costs a few times the encoder input.

Each failure raises a specific :mod:`stygig.errors` type with a message a person can act on; no
message repeats the client's bytes, Pillow's parser messages (which can quote them) or a path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import mmap
import re
import threading
import time
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from stygig import storage
from stygig.errors import (
    ImageTooLargeError,
    InvalidImageError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    StygigError,
    UnsupportedMediaError,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "ImageHeader",
    "ImageLimits",
    "PreprocessSpec",
    "check_header",
    "check_photos",
    "decode_image",
    "decode_work",
    "fit_array",
    "image_bytes",
    "looks_like_image",
    "photo_work",
    "preprocess",
    "preprocess_batch",
    "read_header",
    "sniff_format",
]

log = logging.getLogger("stygig.images")

# Pillow warns, per photo, about what hostile metadata it skips (one line per bad EXIF tag:
# a 64 KB JPEG wrote 2.4 MB to the log, audit of session 46) and about its generic pixel
# limit, which this module's own limits replace. Filtered once for the process, by category
# and by Pillow's metadata parsers: a ``catch_warnings`` per decode is not thread-safe (a
# concurrent exit can leave its filters in place) and resets Python's show-once registry.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings(
    "ignore", category=UserWarning, module=r"PIL\.(TiffImagePlugin|JpegImagePlugin|PngImagePlugin)"
)

# Never decode a partial image silently: a truncated file is an error, not a grey stripe.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP"})

# The only Pillow openers hostile bytes reach. JPEG's opener also returns MPO files.
_OPEN_FORMATS = ("JPEG", "PNG", "WEBP")

# Signatures: the formats we accept first, then image formats we recognise in order to answer
# 415 ("a real image in a format we do not read") rather than 400 ("not an image").
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR or TGA"),  # a cursor, or an uncompressed true-colour TGA
    (b"icns", "ICNS"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
)
# ISO base media files (HEIC, AVIF) say what they are in the ``ftyp`` box: its major brand, or
# one of its compatible brands (an AVIF may name another major brand: review, session 50).
_FTYP_BRANDS = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"heim": "HEIC",
    b"heis": "HEIC",
    b"hevc": "HEIC",
    b"hevx": "HEIC",
    b"hevm": "HEIC",
    b"hevs": "HEIC",
    b"mif1": "HEIF",
    b"mif2": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"avio": "AVIF",
}
_FTYP_MAX_BRANDS = 64  # compatible brands read from one ftyp box, at most
# "BM" alone is too common a start for text; a BMP also names one of these DIB header sizes.
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

# Modes Image.reduce averages correctly. Palette indices, 1-bit and 16-bit grey are converted
# to one of these first (palette indices must not be averaged; reduce refuses the others).
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "CMYK"})


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied before any pixel is decoded.

    The pixels-per-byte limit stops images that are tiny on the wire but huge in memory (a 1.5 KB
    lossless WebP of 16000 x 2499). Measured on real product shots (the 6,617 Kaggle and 9,248
    MANGO catalogue JPEGs, and 300 of them re-encoded, also upscaled 8x): JPEG p99 19, max 53;
    PNG max 27; lossless WebP max 47; lossy WebP (q80) max 296 pixels per byte. The most
    compressible realistic shot we could make — a garment on 7.5% of a pure-white 24 MP canvas —
    is 465 (lossy WebP q50), and a pure-white canvas is 562 in lossy WebP and 301 in RGB PNG. So
    1,000 is about twice the worst real case and above what lossy WebP and RGB PNG can reach at
    all; only lossless WebP and grey/palette/1-bit PNG of near-uniform content go beyond it.
    Images of at most ``pixels_per_byte_floor`` pixels (16 MB as RGBA) are always allowed.
    """

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # a 48 MP phone photo is 48e6; 40e6 leaves room for 12-36 MP
    # PNG and WebP are decoded whole (JPEG at 1/8 scale when the encoder allows: a 40 MP JPEG
    # costs ~23 ms of CPU to prepare). Whole, 40 MP cost ~600 ms of CPU (a 189 KB lossy WebP),
    # 16 MP ~200 ms: a bound on what one small upload can make the server do. Photos from
    # phones are JPEG or HEIC; screenshots and web images are a few MP.
    max_whole_decode_pixels: int = 16_000_000
    min_side: int = 8
    # Long side / short side. Garments, shoes and accessories photograph well inside 4:1; 20:1
    # leaves room for banners and keeps every resize of an accepted image output-bounded.
    max_aspect_ratio: float = 20.0
    max_pixels_per_byte: float = 1_000.0
    pixels_per_byte_floor: int = 4_000_000
    # libjpeg decodes each scan over the whole image: ~22 ms a scan at 36 MP, however few bytes
    # the scan has. Encoders write 1 scan (baseline), or progressive 6 (grey), 10 (colour) or 18
    # (CMYK) with libjpeg's script, ~12 with mozjpeg's; the catalogue photos have 1 or 10.
    max_jpeg_scans: int = 100
    # And scans x pixels: 100 scans are cheap on a small photo but cost ~3 s of CPU at 40 MP
    # (a 0.47 MB file); 500 M is libjpeg's 10-scan colour script or mozjpeg's ~12 at the full
    # 40 MP, its 18-scan CMYK script up to 27 MP, every scan count up to 5 MP; at most ~0.4 s.
    max_jpeg_scan_pixels: int = 500_000_000
    # Markers of any kind, scans included. Pillow parses the header's markers in Python (5M
    # empty comments: 4.6 s and +400 MB). The catalogue photos have 9 to 29; an ICC profile
    # split over APP2 segments or extended XMP adds at most a few hundred.
    max_jpeg_segments: int = 5_000
    # Pillow reads every chunk in Python (~4 us each; 20 MB of empty ones: 6 s and +200 MB).
    # libpng writes 8 KB image-data chunks: 2,560 for a 20 MB file.
    max_png_chunks: int = 50_000
    # iCCP, zTXt and iTXt: Pillow inflates each one up to 1 MB (2 ms); the spec allows one iCCP,
    # and real files carry a few text chunks (XMP, comments, generator settings).
    max_png_compressed_chunks: int = 32
    # A larger embedded ICC profile is ignored (the photo decodes as untagged). Photo and
    # display profiles are small (Display P3 0.5 KB, Adobe RGB 0.6 KB, sRGB 0.5 to 3 KB); a
    # LUT-based RGB profile can reach a few hundred KB. Pillow has already read the bytes
    # (bounded by max_bytes and the structure limits); this bounds what LittleCMS parses.
    max_icc_profile_bytes: int = 1 << 20
    # What one decode may hold, estimated from the header (:func:`decode_bytes`): pixels alone
    # do not bound it. A progressive (or multi-scan) JPEG keeps every DCT coefficient of the
    # whole image (128 bytes per 8x8 block and channel) however small the output: 307 MB for
    # a 311 KB 40 MP CMYK file; a 16-bit PNG holds twice the bytes of an 8-bit one, a WebP
    # several canvases. 256 MiB: a progressive 40 MP photo (4:2:0 ~124 MB, 4:4:4 ~244 MB),
    # a 16 MP PNG or WebP; a baseline JPEG reduced in libjpeg costs a few MB at any size.
    max_decode_bytes: int = 256 << 20


DEFAULT_LIMITS = ImageLimits()
#: For a catalogue's own photos (the operator's, read by builds): PNG and WebP masters up to
#: the full pixel limit, and the decode memory that takes; the whole-decode bound is for
#: what clients send.
CATALOG_LIMITS = ImageLimits(
    max_whole_decode_pixels=DEFAULT_LIMITS.max_pixels, max_decode_bytes=2 << 30
)

#: Decodes estimated under this many bytes (every baseline JPEG reduced in libjpeg, every
#: photo of a few MP) never wait for the shared budget below: one per thread at most.
SMALL_DECODE_BYTES = 16 << 20
#: What the larger decodes of all threads may hold at once (one process): a few at a time,
#: so a burst of expensive photos costs a bounded amount of memory, not threads x each.
DECODE_BUDGET_BYTES = 512 << 20
#: How long a decode waits for room in the budget before its request is told to retry (503).
DECODE_WAIT_S = 30.0


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


def _image_format(data: bytes) -> str | None:
    """The image format ``data`` starts like (accepted or not), or None."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return _ftyp_format(data)
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n")  # a BOM, white space
    if head.startswith((b"<svg", b"<?xml", b"<!DOCTYPE svg")) and b"<svg" in head:
        return "SVG"  # a 415 naming it, as the content type image/svg+xml gets (s50)
    return None


def _ftyp_format(data: bytes) -> str | None:
    """The image format an ISO base media file's ``ftyp`` box names: its major brand first,
    then its compatible brands (within the box's declared size, at most _FTYP_MAX_BRANDS)."""
    size = int.from_bytes(data[:4], "big")
    end = min(len(data), size if size >= 16 else 16, 16 + 4 * _FTYP_MAX_BRANDS)
    brands = [data[8:12]] + [data[i : i + 4] for i in range(16, end - 3, 4)]
    return next((_FTYP_BRANDS[b] for b in brands if b in _FTYP_BRANDS), None)


def sniff_format(data: bytes) -> str | None:
    """Guess an image format from its first bytes (``"JPEG"``, ``"PNG"``, ``"WEBP"`` or None)."""
    name = _image_format(data)
    return name if name in ACCEPTED_FORMATS else None


def looks_like_image(data: bytes) -> bool:
    """Whether ``data`` starts like an image of any format this module recognises (accepted
    or not: :func:`decode_image` then says which it is and why it is refused)."""
    return _image_format(data) is not None


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header declares, before any pixel is decoded."""

    format: str  # Pillow's name: "JPEG", "MPO", "PNG" or "WEBP"
    width: int
    height: int
    progressive: bool  # a progressive JPEG: decoded in passes over the whole image

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> ImageHeader | None:
    """The header of an image, after the format and structure checks :func:`decode_image`
    makes first; None where those checks or the header fail (:func:`decode_image` then says
    why). Reads no pixel data: the structure check is linear in the bytes (~7 us for a 5 KB
    JPEG, ~13 ms for 64 KB of header fill), then Pillow's header parser (~20 us)."""
    try:
        data, _ = _check_format(data, limits)
        img = _open(data)
    except (ImageTooLargeError, InvalidImageError, UnsupportedMediaError):
        return None
    width, height = img.size
    progressive = bool(img.info.get("progressive"))
    return ImageHeader(str(img.format), int(width), int(height), progressive)


def check_header(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """Refuse what :func:`decode_image` refuses before it reads a pixel (:func:`_opened`), with
    its errors and codes. A photo that passes may still be corrupt in its pixels, which only
    decoding shows (an asynchronous job's input is checked so at submission and decoded when
    the job runs), or cost too much to decode at the size its encoder asks for."""
    _opened(data, limits)


#: How much more full-size decoding a libjpeg scan pass costs than a WebP or PNG pixel does
#: (measured: a 36 MP scan ~22 ms; 16 MP of WebP or PNG 200-300 ms).
_JPEG_SCAN_SHARE = 25


def decode_work(img: Image.Image, scans: int) -> int:
    """About how much decoding ``img`` (opened, not loaded) costs, in pixels of a whole PNG or
    WebP decode: those are decoded whole; a JPEG's scans each pass over its whole image at a
    25th of that cost (whatever scale it is decoded at)."""
    pixels = img.size[0] * img.size[1]
    if img.format in ("JPEG", "MPO"):
        return max(1, scans) * pixels // _JPEG_SCAN_SHARE
    return pixels


def check_photos(
    sources: Sequence[bytes | str | Path], limits: ImageLimits = DEFAULT_LIMITS
) -> None:
    """Refuse, from their headers, what :func:`decode_image` refuses of each photo of one
    request before it reads a pixel (:func:`check_header`, with its own error), and photos
    that together would cost more decoding than two photos at the limit may: each photo is
    bounded alone, and 8 WebPs of 16 MP (28 KB each) cost 2.6 s of CPU in one 304 KB request
    (review, session 42)."""
    budget = 2 * limits.max_whole_decode_pixels
    work = 0
    for n, source in enumerate(sources):
        try:
            work += photo_work(source, limits)
        except StygigError as e:
            raise which_photo(e, n, len(sources)) from None
    if len(sources) > 1 and work > budget:
        raise ImageTooLargeError(
            f"the photos together would take about {work / 1e6:,.0f} M pixels of full-size "
            f"decoding (at most {budget / 1e6:,.0f} M a request); send fewer or smaller photos "
            "(a baseline JPEG costs least)",
            code="images_too_costly",
        )


def which_photo(error: StygigError, n: int, total: int) -> StygigError:
    """``error``, about photo ``n`` (from 0) of a request of ``total``, saying which one when
    there are several (review, session 54: "the data is not an image" for one of three)."""
    if total > 1:
        error.message = f"photo {n + 1} of {total}: {error.message}"
        error.args = (error.message,)
    return error


def photo_work(source: bytes | str | Path, limits: ImageLimits = DEFAULT_LIMITS) -> int:
    """:func:`decode_work` of one photo, from its header, after :func:`check_header`'s checks
    (with their errors): what a request's photos are bounded by before any is decoded."""
    img, scans = _opened(source, limits)
    return decode_work(img, scans)


def _opened(source: bytes | str | Path, limits: ImageLimits) -> tuple[Image.Image, int]:
    """The image with its header parsed and no pixel read, and its JPEG scans, after every
    check made from its bytes and header: over the byte limit, not an image or not an accepted
    format, a malformed structure or header, too many pixels, too small or too elongated, a
    PNG's rows over their bound."""
    data = _read_source(source, limits)
    data, scans = _check_format(data, limits)
    img = _open(data)
    _check_header(*img.size, len(data), limits, str(img.format))
    if img.format == "PNG" and png_raw_bytes(data) > 4 * limits.max_whole_decode_pixels:
        raise ImageTooLargeError(
            f"a PNG may hold at most {4 * limits.max_whole_decode_pixels:,} bytes of rows "
            f"({limits.max_whole_decode_pixels:,} pixels of 8-bit RGBA, half as many of "
            "16-bit); send a smaller image or a JPEG"
        )
    return img, scans


def image_bytes(source: bytes | str | Path, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """A photo's bytes: a path read within the byte limit (its errors those of
    :func:`decode_image`, never the path), bytes as they are."""
    return _read_source(source, limits)


def _read_source(source: bytes | str | Path, limits: ImageLimits) -> bytes:
    too_large = ImageTooLargeError(f"the image is over the limit of {limits.max_bytes:,} bytes")
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        # storage's bounded read: the size checked first, a FIFO or a device refused rather
        # than waited on; its errors name the path, so they are said again here without it.
        try:
            data = storage.read_bytes(Path(source), max_bytes=limits.max_bytes)
        except NotFoundError as e:
            raise InvalidImageError("the image file was not found", code="image_not_found") from e
        except PayloadTooLargeError as e:
            raise too_large from e
        except StygigError as e:
            if e.code == "not_a_regular_file":
                raise InvalidImageError(
                    "the image is not a regular file", code="not_a_regular_file"
                ) from e
            raise InvalidImageError("the image file cannot be read") from e
    if not data:
        raise InvalidImageError("the image is empty (0 bytes)", code="empty_image")
    if len(data) > limits.max_bytes:
        raise too_large
    return data


def _check_header(width: int, height: int, n_bytes: int, limits: ImageLimits, kind: str) -> None:
    """Refuse, from the header's size alone, an image that would cost too much to decode, or
    is too small or too elongated."""
    _check_pixel_count(width, height, limits)
    if min(width, height) < limits.min_side:
        raise InvalidImageError(
            f"the image is too small; both sides must be at least {limits.min_side} pixels",
            code="image_too_small",
        )
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        raise InvalidImageError(
            f"the image is too elongated; its long side may be at most "
            f"{limits.max_aspect_ratio:g} times its short side",
            code="image_aspect_ratio",
        )
    _check_decode_cost(width, height, n_bytes, limits, kind)


def _check_pixels(width: int, height: int, n_bytes: int, limits: ImageLimits, kind: str) -> None:
    """Refuse, from its size, an image that would cost too much to decode (not one that is
    small or elongated: :func:`read_header` still reads such a header)."""
    _check_pixel_count(width, height, limits)
    _check_decode_cost(width, height, n_bytes, limits, kind)


def _check_pixel_count(width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"the image has more than {limits.max_pixels:,} pixels (width x height); "
            "send a smaller image"
        )


def _check_decode_cost(
    width: int, height: int, n_bytes: int, limits: ImageLimits, kind: str
) -> None:
    pixels = width * height
    if pixels > limits.pixels_per_byte_floor and pixels > limits.max_pixels_per_byte * n_bytes:
        raise ImageTooLargeError(
            f"the image has too many pixels for its file size; above "
            f"{limits.pixels_per_byte_floor:,} pixels it may have at most "
            f"{limits.max_pixels_per_byte:,g} pixels per byte (re-encode it as JPEG)",
            code="image_too_compressed",
        )
    if kind not in ("JPEG", "MPO") and pixels > limits.max_whole_decode_pixels:
        raise ImageTooLargeError(
            f"a PNG or WebP image may have at most {limits.max_whole_decode_pixels:,} pixels "
            f"(JPEG: {limits.max_pixels:,}); send a smaller image or a JPEG"
        )


# The next JPEG marker: 0xFF and a byte that is not 0x00 (a stuffed 0xFF data byte), 0xFF (fill
# before a marker: the match is at the last one) or RST0-7 (inside a scan). This is where libjpeg
# finds the next marker after a segment or a scan's entropy-coded data, junk skipped. Two bytes
# per try, so the search runs in C and stays linear even over long runs of 0xFF.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_SOS, _JPEG_EOI, _JPEG_APP1 = 0xDA, 0xD9, 0xE1
_EXIF_ID = b"Exif\x00\x00"
#: The most entries an EXIF block's first IFD may have before the block is dropped unread
#: (with a warning): the standard defines a few dozen tags there.
_MAX_EXIF_ENTRIES = 1000
_JPEG_NO_LENGTH = frozenset({0x01, 0xD8})  # TEM, SOI: markers without a length field
# Frame headers: SOF0-15 but DHT, JPG and DAC. libjpeg refuses a second one, but only after
# Pillow has parsed them all in Python (6 MB of them: 0.5 s and +200 MB).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Before the first scan Pillow steps over junk and fill bytes between segments one byte at a
# time in Python (20 MB of 0xFF: 7 s); 64 KB costs ~25 ms. Real files have none.
_MAX_JPEG_HEADER_GAP = 64 * 1024
# Chunks Pillow inflates (up to PngImagePlugin.MAX_TEXT_CHUNK each; iCCP and text chunks with an
# empty keyword or invalid UTF-8 escape its MAX_TEXT_MEMORY total).
_PNG_COMPRESSED_CHUNKS = frozenset({b"iCCP", b"zTXt", b"iTXt"})


def _check_jpeg_structure(data: bytes, limits: ImageLimits) -> tuple[int, list[tuple[int, int]]]:
    """Refuse a JPEG with more scans or segments than ``limits`` allow, or a malformed header;
    the number of scans before the first EOI, and the spans of its EXIF segments when their
    first IFD has more entries than a camera writes (:func:`_oversized_exif`).

    Walks the markers as libjpeg reads them: each segment skipped by its length, a scan's
    entropy-coded data up to the next marker; up to the first EOI, where decoding stops (an
    MPO's later frames are never decoded). Truncated or malformed structure just ends the walk:
    reporting it is Pillow's job. Linear, and in C but for one step per marker.
    """
    scans = segments = frames = header_gap = pixels = 0
    exif: list[tuple[int, int]] = []
    pos = 2  # after SOI
    while (match := _JPEG_MARKER.search(data, pos)) is not None:
        if scans == 0:
            header_gap += match.start() - pos
            if header_gap > _MAX_JPEG_HEADER_GAP:
                raise InvalidImageError(
                    f"the JPEG header has more than {_MAX_JPEG_HEADER_GAP:,} bytes of padding "
                    "or junk between its segments",
                    code="image_malformed_header",
                )
        marker = data[match.start() + 1]
        pos = match.end()
        if marker == _JPEG_EOI:
            break
        segments += 1
        if segments > limits.max_jpeg_segments:
            raise ImageTooLargeError(
                f"the JPEG has more than {limits.max_jpeg_segments:,} segments (markers)",
                code="image_too_many_segments",
            )
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker in _JPEG_SOF:
            frames += 1
            if frames > 1:
                raise InvalidImageError(
                    "the JPEG has more than one frame header (SOF)", code="image_malformed_header"
                )
            # Length (2), precision (1), height (2), width (2).
            pixels = int.from_bytes(data[pos + 3 : pos + 5], "big") * int.from_bytes(
                data[pos + 5 : pos + 7], "big"
            )
        # A length under 2 is skipped as 2, the length field itself, like libjpeg and Pillow.
        end = pos + max(2, int.from_bytes(data[pos : pos + 2], "big"))
        if marker == _JPEG_APP1 and scans == 0 and data[pos + 2 : pos + 8] == _EXIF_ID:
            exif.append((match.start(), end))
        pos = end
        if marker == _JPEG_SOS:
            scans += 1
            per_size = max(1, limits.max_jpeg_scan_pixels // max(pixels, 1))  # 1: a baseline
            allowed = min(limits.max_jpeg_scans, per_size)
            if scans > allowed:
                raise ImageTooLargeError(
                    f"the JPEG has more than {allowed:,} scans, the most allowed at its size; "
                    "each one is decoded over the whole image (re-encode it as a baseline JPEG)",
                    code="image_too_many_scans",
                )
    return scans, _oversized_exif(data, exif)


def _oversized_exif(data: bytes, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` (a JPEG's EXIF segments) when the block they make has over
    :data:`_MAX_EXIF_ENTRIES` entries in its first IFD, else none. Pillow joins every EXIF
    segment into one block and, for a JPEG without a JFIF header, reads that IFD whole in
    Python when it opens the file (for a resolution): 65,535 entries cost 0.23 s of CPU
    (measured in session 47). Cameras write a few dozen."""
    if not spans:
        return []
    block = b"".join(data[start + 10 : end] for start, end in spans)  # marker, length, "Exif\0\0"
    return spans if _ifd0_entries(block) > _MAX_EXIF_ENTRIES else []


def _check_png_structure(data: bytes, limits: ImageLimits) -> list[tuple[int, int]]:
    """Refuse a PNG with more chunks, or more compressed chunks, than ``limits`` allow; the
    spans of the compressed metadata chunks that inflate past what Pillow reads (iCCP, zTXt,
    iTXt over ``PngImagePlugin.MAX_TEXT_CHUNK``: Pillow refuses the whole file for one), which
    :func:`decode_image` leaves out: metadata, not pixels (an oversized profile is ignored,
    as elsewhere).

    Counts every chunk up to IEND, where Pillow stops reading; a truncated chunk ends the walk
    (Pillow reports it). One step per chunk, at most ``max_png_chunks`` steps; each of at most
    ``max_png_compressed_chunks`` compressed chunks is inflated up to Pillow's limit, as Pillow
    would.
    """
    chunks = compressed = 0
    oversized: list[tuple[int, int]] = []
    pos = 8  # after the signature
    while pos + 8 <= len(data):
        chunks += 1
        if chunks > limits.max_png_chunks:
            raise ImageTooLargeError(
                f"the PNG has more than {limits.max_png_chunks:,} chunks",
                code="image_too_many_chunks",
            )
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")  # length, type, data, CRC
        if kind in _PNG_COMPRESSED_CHUNKS:
            compressed += 1
            if compressed > limits.max_png_compressed_chunks:
                raise ImageTooLargeError(
                    f"the PNG has more than {limits.max_png_compressed_chunks:,} compressed "
                    "metadata chunks (iCCP, zTXt, iTXt)",
                    code="image_too_many_chunks",
                )
            if _inflates_past(data[pos + 8 : end - 4], kind):
                oversized.append((pos, end))
        if kind == b"IEND":
            return oversized
        pos = end
    return oversized


def _inflates_past(body: bytes, kind: bytes) -> bool:
    """Whether a compressed PNG chunk's text or profile inflates past Pillow's limit."""
    from PIL import PngImagePlugin

    # iCCP and zTXt: keyword, NUL, method, data; iTXt: keyword, NUL, flag, method, language,
    # NUL, translated keyword, NUL, text (inflated only when the flag says compressed).
    _, _, rest = body.partition(b"\0")
    if kind == b"iTXt":
        if len(rest) < 2 or rest[0] != 1:
            return False
        parts = rest[2:].split(b"\0", 2)
        if len(parts) < 3:
            return False
        compressed = parts[2]
    else:
        compressed = rest[1:]
    inflate = zlib.decompressobj()
    try:
        inflate.decompress(compressed, PngImagePlugin.MAX_TEXT_CHUNK)
    except zlib.error:
        return False  # corrupt: Pillow's to report, or to skip
    return bool(inflate.unconsumed_tail)


def _check_format(data: bytes, limits: ImageLimits) -> tuple[bytes, int]:
    """Check the format and structure from the signature and layout, before any parser runs;
    the bytes to parse (a PNG without its oversized metadata chunks) and a JPEG's scans.

    A recognised image in a format StyGig does not accept is refused (415) here, so none of
    Pillow's other parsers ever sees it; a JPEG's scans and segments and a PNG's chunks are
    counted against ``limits``.
    """
    name = _image_format(data)
    if name is not None and name not in ACCEPTED_FORMATS:
        raise UnsupportedMediaError(f"{name} images are not accepted; send JPEG, PNG or WebP")
    if name == "JPEG":
        scans, exif = _check_jpeg_structure(data, limits)
        if exif:
            log.warning("JPEG EXIF with over %d entries ignored", _MAX_EXIF_ENTRIES)
        return _without(data, exif), scans
    if name == "WEBP" and (size := _webp_canvas(data)) is not None:
        # Pillow opens every WebP through libwebp's animation decoder, which allocates the
        # canvas with the header: a 120-byte file declaring 13000 x 13000 reserved 680 MB
        # before any check (audit, session 46). So its cost is checked from the bytes first.
        _check_pixels(*size, len(data), limits, name)
    if name == "PNG":
        oversized = _check_png_structure(data, limits)
        if oversized:
            log.warning("PNG metadata chunk(s) too large to read ignored: %d", len(oversized))
        return _without(data, oversized), 0
    return data, 0


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    """A WebP's canvas (width, height) from its first chunk, as libwebp reads it: ``VP8X``'s
    canvas, or a simple file's lossy (``VP8``) or lossless (``VP8L``) frame; None when the
    chunk is none of those or is cut short (Pillow then reports what is wrong)."""
    kind, body = data[12:16], data[20:30]
    if kind == b"VP8X" and len(body) >= 10:
        return 1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")
    if kind == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        return (
            int.from_bytes(body[6:8], "little") & 0x3FFF,
            int.from_bytes(body[8:10], "little") & 0x3FFF,
        )
    if kind == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


def _without(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """``data`` less the (ordered, disjoint) ``spans``."""
    if not spans:
        return data
    kept, start = [], 0
    for begin, end in spans:
        kept.append(data[start:begin])
        start = end
    return b"".join([*kept, data[start:]])


def _open(data: bytes) -> Image.Image:
    """Parse the header with the accepted formats' openers only."""
    try:
        return Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError("the image has far too many pixels") from e
    except UnidentifiedImageError as e:  # foreign formats were refused by _check_format
        raise InvalidImageError(
            "the data is not an image StyGig can read (JPEG, PNG or WebP)", code="not_an_image"
        ) from e
    except Exception as e:  # any parser failure on hostile bytes is the input's fault
        _raise_if_out_of_memory(e, _HEADER_PROBE_BYTES)
        raise InvalidImageError("the image header is corrupt") from e


#: What a header parse may allocate: Pillow opens a WebP through libwebp's animation decoder,
#: whose canvases (RGBA, 16 MP at most once _webp_canvas is checked: 64 MB each) are made
#: with the header.
_HEADER_PROBE_BYTES = 128 << 20


def _raise_if_out_of_memory(error: Exception, needed: int) -> None:
    """An :class:`OverloadedError` (503: retry) when a codec's failure was this process's
    memory, not the photo: libjpeg and libwebp report a failed allocation as an ordinary
    ``OSError`` ("could not create decoder object", "broken data stream"), which read as
    "corrupt" (a 400 the client never retries: review, session 42). So after a failure, what
    the decode needed (``needed`` bytes) is asked for once more; if that fails too, the
    process is out of memory."""
    if isinstance(error, MemoryError):
        raise OverloadedError("not enough memory to decode the image now; retry shortly") from error
    try:
        # An anonymous mapping reserves the address space without touching a page (a
        # bytearray writes every byte: 128 MiB and ~0.16 s for each corrupt photo, review of
        # session 42's fixes); it fails where the codec's allocation did (RLIMIT_AS).
        probe = mmap.mmap(-1, max(needed, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, MemoryError, ValueError, OverflowError):
        log.warning("image not decoded: the process is out of memory (%s)", type(error).__name__)
        raise OverloadedError("not enough memory to decode the image now; retry shortly") from error
    probe.close()


def _to_8bit(img: Image.Image, wide_key: bool = False) -> Image.Image:
    """Palette, 1-bit and 16-bit images as 8-bit L, RGB or RGBA, a colour key (a PNG's tRNS:
    pixels of one value are transparent) as alpha; other modes unchanged.

    ``wide_key``: the image was 16-bit RGB, which Pillow reads as its samples' high bytes while
    its colour key keeps all 16 bits: the key is compared by its high bytes too (a pixel within
    one 8-bit level of it is transparent; compared whole, the key missed its own background and
    could hide an opaque garment instead: review, session 50)."""
    key = img.info.get("transparency")
    if key is not None and wide_key and img.mode == "RGB" and isinstance(key, tuple):
        img.info["transparency"] = tuple(int(v) >> 8 for v in key)
    if key is not None and img.mode in ("1", "L", "RGB"):
        # Optimisers write a cut-out's transparent background this way (optipng, oxipng):
        # composited on white like alpha, not read as the key's colour (black, mostly).
        return img.convert("LA" if img.mode != "RGB" else "RGBA")
    if key is not None and img.mode == "I;16" and isinstance(key, int):
        # One byte a pixel for each result and no wider temporaries: with the 16-bit copy,
        # 6 bytes a pixel as decode_bytes counts (an int64 np.where took 8 more: audit,
        # session 46).
        values = np.asarray(img, dtype=np.uint16)
        alpha = np.not_equal(values, key).view(np.uint8)
        alpha *= 255
        grey = np.empty(values.shape, np.uint8)
        np.right_shift(values, 8, out=grey, casting="unsafe")
        del values
        out = Image.merge("LA", (Image.fromarray(grey), Image.fromarray(alpha)))
        # Its orientation (EXIF, XMP) and profile, which a new image does not have (review,
        # session 50: such a photo was not turned upright).
        out.info.update((k, v) for k, v in img.info.items() if k != "transparency")
        return out
    if img.mode in _REDUCIBLE_MODES:
        return img
    if img.mode == "I;16":
        # 16-bit grey PNG: scaled to 0-255 in Pillow (one 16-bit and one 8-bit buffer, no
        # float or numpy copies); convert("L") alone would clip everything above 255.
        return img.point(lambda value: value / 256).convert("L")
    if img.mode == "P" and "transparency" in img.info:
        return img.convert("RGBA")
    return img.convert("L" if img.mode == "1" else "RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB; transparency is composited on white (one new image, no full-size temporaries)."""
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode == "LA":
        # Composited as grey, then widened: pasting LA on RGB copies its raw bytes, which are
        # (L, 0, 0) for an LA image Image.merge made (review, session 50: a grey cut-out came
        # out red).
        grey = Image.new("L", img.size, 255)
        grey.paste(img.getchannel("L"), mask=img.getchannel("A"))
        return grey.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _shrink(img: Image.Image, min_size: int) -> Image.Image:
    """Box-reduce by a whole factor while both sides stay at least ``min_size``."""
    factor = min(img.size) // min_size
    return img.reduce(factor) if factor >= 2 else img


# -- colour management ------------------------------------------------------------------------

# The profile's colour space each flattened mode needs (CMYK photos keep Pillow's conversion).
_ICC_SPACES = {"RGB": "RGB", "L": "GRAY"}
_ICC_CACHE_SIZE = 32
# digest + mode -> transform to sRGB, or None (sRGB already, or unusable: warned once).
_icc_cache: OrderedDict[tuple[bytes, str], ImageCms.ImageCmsTransform | None] = OrderedDict()
_icc_lock = threading.Lock()


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _probe(mode: str) -> Image.Image:
    """Every 15th level of each channel (5,832 colours; all 256 grey levels for ``L``)."""
    if mode == "L":
        return Image.frombytes("L", (256, 1), bytes(range(256)))
    levels = np.arange(0, 256, 15, dtype=np.uint8)  # 0, 15, ..., 255: 18 levels
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    return Image.fromarray(np.stack([r, g, b], axis=-1).reshape(-1, len(levels), 3), "RGB")


def _build_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform of ``icc`` to sRGB for ``mode`` pixels; None when the profile is sRGB
    already (within one level on a probe of the whole cube) or cannot be used (warned)."""
    if mode not in _ICC_SPACES:  # before parsing: no profile is used for these
        log.warning("ignoring a photo's embedded ICC profile: %s photos are not converted", mode)
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except Exception:  # lcms's parser failing on hostile bytes is the input's fault
        log.warning("ignoring a photo's embedded ICC profile: it is malformed")
        return None
    space = str(profile.profile.xcolor_space).strip()
    if space != _ICC_SPACES[mode]:
        log.warning(
            "ignoring a photo's embedded ICC profile: it describes %s colours, the photo is %s",
            space[:8] or "unknown",
            "grey" if mode == "L" else mode,
        )
        return None
    if not profile.profile.is_matrix_shaper:
        # A table-based (LUT) profile costs LittleCMS 50 to 500 ms to prepare, per distinct
        # profile; photo and display profiles (sRGB, Display P3, Adobe RGB, ProPhoto, grey
        # gamma) are matrix/curve profiles, prepared in under 10 ms however large their curves.
        log.warning("ignoring a photo's embedded ICC profile: only matrix/curve profiles are used")
        return None
    try:
        transform = ImageCms.buildTransform(
            profile, _srgb_profile(), mode, "RGB", ImageCms.Intent.RELATIVE_COLORIMETRIC
        )
        probe = _probe(mode)
        converted = np.asarray(ImageCms.applyTransform(probe, transform), np.int16)
    except Exception:
        log.warning("ignoring a photo's embedded ICC profile: LittleCMS cannot use it")
        return None
    if np.abs(converted - np.asarray(probe.convert("RGB"), np.int16)).max() <= 1:
        return None  # sRGB (or indistinguishable from it): nothing to convert
    if (problem := _implausible(converted.reshape(-1, 3), mode)) is not None:
        log.warning("ignoring a photo's embedded ICC profile: %s", problem)
        return None
    return transform


#: How far from neutral a profile may take its own greys (R = G = B), in sRGB levels: a display
#: or camera profile's colorants add up to its white, so its greys stay grey.
_ICC_GREY_TOLERANCE = 16


def _implausible(converted: np.ndarray, mode: str) -> str | None:
    """Why a profile's conversion of the probe (rows of sRGB) is no photo's colours, or None.

    LittleCMS uses any well-formed matrix/curve profile, and a broken one turned whole photos
    black, white or magenta (all-zero or huge colorants, a gamma of 0 or 255.99: audit, session
    46), which is not what a browser shows either. A profile's greys must stay grey, grow
    from dark to light without collapsing to a few levels, and span most of the range."""
    if mode == "L":
        greys = converted
    else:
        levels = round(len(converted) ** (1 / 3))
        steps = np.arange(levels)
        greys = converted[(steps * levels + steps) * levels + steps]  # R = G = B
    if (greys.max(axis=1) - greys.min(axis=1)).max() > _ICC_GREY_TOLERANCE:
        return "it does not keep greys grey"
    luma = greys.mean(axis=1)
    if (np.diff(luma) < -1).any() or len(np.unique(greys, axis=0)) < len(greys) // 2:
        return "its greys do not grow from dark to light"
    if luma[-1] - luma[0] < 128:
        return "it squeezes the photo's range"
    return None


def _icc_transform(icc: bytes, mode: str, limits: ImageLimits) -> ImageCms.ImageCmsTransform | None:
    """The cached transform of ``icc`` for ``mode`` pixels (see :func:`_build_transform`)."""
    if len(icc) > limits.max_icc_profile_bytes:
        log.warning(
            "ignoring a photo's embedded ICC profile: %d bytes is over the limit of %d",
            len(icc),
            limits.max_icc_profile_bytes,
        )
        return None
    key = (hashlib.sha256(icc).digest(), mode)
    with _icc_lock:
        if key in _icc_cache:
            _icc_cache.move_to_end(key)
            return _icc_cache[key]
    transform = _build_transform(icc, mode)  # outside the lock: a rare duplicate is harmless
    with _icc_lock:
        _icc_cache[key] = transform
        while len(_icc_cache) > _ICC_CACHE_SIZE:
            _icc_cache.popitem(last=False)
    return transform


def _flatten(img: Image.Image) -> Image.Image:
    """RGBA on white as RGB, LA on white as L; other modes unchanged."""
    if img.mode not in ("RGBA", "LA"):
        return img
    mode = img.mode[0] if img.mode == "LA" else "RGB"
    background = Image.new(mode, img.size, 255 if mode == "L" else (255, 255, 255))
    background.paste(img.convert(mode) if img.mode == "LA" else img, mask=img.getchannel("A"))
    return background


def _to_srgb(img: Image.Image, icc: bytes | None, limits: ImageLimits) -> Image.Image:
    """8-bit sRGB: transparency on white, then the embedded profile's conversion if any."""
    if not icc:
        return _to_rgb(img)
    flat = _flatten(img)
    transform = _icc_transform(icc, flat.mode, limits)
    if transform is None:
        return _to_rgb(flat)
    if flat.mode == "RGB":
        ImageCms.applyTransform(flat, transform, inPlace=True)
        return flat
    converted = ImageCms.applyTransform(flat, transform)
    assert converted is not None
    return converted


def decode_image(
    source: bytes | str | Path,
    *,
    min_size: int | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> Image.Image:
    """Decode and validate one image into an 8-bit sRGB ``PIL.Image``.

    A photo with an embedded ICC profile (RGB or grey) is converted to sRGB; see the module
    docstring for what is ignored, with a logged warning, instead.

    Args:
        source: encoded bytes, or a path to a file.
        min_size: if given, the image may be decoded at reduced scale as long as both sides stay
            at least this large (JPEG DCT scaling, a box reduction for PNG and WebP); pass the
            encoder's input size.
        limits: byte, pixel, aspect-ratio, pixels-per-byte and structure (JPEG scans and
            segments, PNG chunks) limits, checked before decoding.

    Raises:
        InvalidImageError: not an image, corrupt or truncated, a malformed JPEG header, too small
            or too elongated.
        UnsupportedMediaError: a real image in a format StyGig does not accept (GIF, TIFF, ...).
        ImageTooLargeError: over the byte, pixel, pixels-per-byte, scan, segment or chunk limit.
    """
    img, scans = _opened(source, limits)
    cost = decode_bytes(img, min_size, scans)
    if cost > limits.max_decode_bytes:
        raise ImageTooLargeError(
            f"decoding the image would take about {cost >> 20:,} MB of memory (at most "
            f"{limits.max_decode_bytes >> 20:,} MB); send a baseline JPEG or a smaller image",
            code="image_decode_too_large",
        )
    with _DECODES.hold(cost):
        try:
            if min_size is not None and img.format in ("JPEG", "MPO"):
                # EXIF rotation swaps sides but draft keeps both >= the request: safe.
                img.draft("RGB", (min_size, min_size))
            # A 16-bit RGB PNG (read as its high bytes): its colour key is 16-bit.
            wide_key = img.format == "PNG" and any(
                isinstance(t.args, str) and t.args.startswith("RGB;16")
                for t in getattr(img, "tile", ())
            )
            img.load()
            icc = img.info.get("icc_profile")
            img = _to_8bit(img, wide_key)
            if min_size is not None:
                # Before any other conversion, so a 40 MP PNG is copied at most once.
                img = _shrink(img, min_size)
            img = _exif_transposed(img)
            return _to_srgb(img, icc if isinstance(icc, bytes) else None, limits)
        except Exception as e:  # PIL's decoders raise OSError, ValueError, struct.error, ...
            # A MemoryError, or a codec's failed allocation, is this process, not the photo:
            # the client may try again.
            _raise_if_out_of_memory(e, cost)
            log.info("image not decoded (%s): answered as corrupt", type(e).__name__)
            raise InvalidImageError("the image data is corrupt or truncated") from e


#: How an EXIF orientation (1-8) turns the stored pixels upright.
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG = 0x0112
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([0-9])')


def _tiff(exif: bytes) -> bytes:
    """``exif`` without its ``Exif\\0\\0`` header, which writers put there once or, some, twice
    (Pillow strips two)."""
    for _ in range(2):
        if exif.startswith(_EXIF_ID):
            exif = exif[6:]
    return exif


def _ifd0(tiff: bytes) -> tuple[str, int, int] | None:
    """Byte order (``<`` or ``>``), offset and entry count of a TIFF block's first IFD; None
    when it is not one (the magic number is read in either byte order, as Pillow does)."""
    endian = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if endian is None or len(tiff) < 8 or tiff[2:4] not in (b"*\x00", b"\x00*"):
        return None
    order: Literal["little", "big"] = "little" if endian == "<" else "big"
    offset = int.from_bytes(tiff[4:8], order)
    if offset + 2 > len(tiff):
        return None
    return endian, offset, int.from_bytes(tiff[offset : offset + 2], order)


def _ifd0_entries(exif: bytes) -> int:
    return 0 if (ifd := _ifd0(_tiff(exif))) is None else ifd[2]


#: EXIF value types an orientation may be written as: SHORT, LONG, SSHORT, SLONG.
_SHORTS, _LONGS = (3, 8), (4, 9)


def _ifd0_orientation(exif: bytes) -> int | None:
    """The orientation tag of a TIFF-structured EXIF block's first IFD, or None.

    Only that one tag is looked up, in one vectorised pass over the IFD's entries: Pillow's
    ``getexif`` reads every entry in Python (with a warning per bad one) and
    ``exif_transpose`` then re-serialises the whole block, so 60,000 tags in a 720 KB PNG
    cost 1.4 s of CPU per photo (audit, session 46). The first value is read when the
    entry holds more than one, as Pillow does."""
    tiff = _tiff(exif)
    if (ifd := _ifd0(tiff)) is None:
        return None
    endian, offset, count = ifd
    entries = tiff[offset + 2 : offset + 2 + 12 * count]
    layout = np.dtype(
        [
            ("tag", endian + "u2"),
            ("type", endian + "u2"),
            ("count", endian + "u4"),
            ("short", endian + "i2"),
            ("rest", "V2"),
        ]
    )
    table = np.frombuffer(entries, dtype=layout, count=len(entries) // 12)
    found = np.flatnonzero(table["tag"] == _ORIENTATION_TAG)
    if not found.size:
        return None
    entry = table[found[0]]
    kind, n = int(entry["type"]), int(entry["count"])
    if kind in _SHORTS and 1 <= n <= 2:  # inline: one or two 16-bit values
        return int(entry["short"])
    if kind in _LONGS and n == 1:
        order: Literal["little", "big"] = "little" if endian == "<" else "big"
        return int.from_bytes(entry.tobytes()[8:12], order, signed=True)
    return None


def _orientation(img: Image.Image) -> int | None:
    """The photo's orientation from where Pillow's ``getexif`` reads it, in the same order:
    an EXIF block (JPEG APP1, PNG ``eXIf``, WebP ``EXIF``) or ImageMagick's hex text of one
    in a PNG, then an XMP packet's ``tiff:Orientation``."""
    exif = img.info.get("exif")
    raw = img.info.get("Raw profile type exif")
    if exif is None and isinstance(raw, str):
        # "\nexif\n   <length>\n<hex lines>", as Pillow reads it
        exif = bytes.fromhex("".join(raw.split("\n")[3:]))
    if isinstance(exif, bytes):
        orientation = _ifd0_orientation(exif)
        if orientation is not None:
            return orientation
    xmp = img.info.get("XML:com.adobe.xmp") or img.info.get("xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8", "replace")
    if isinstance(xmp, bytes) and (match := _XMP_ORIENTATION.search(xmp)):
        return int(match[1])
    return None


def _exif_transposed(img: Image.Image) -> Image.Image:
    """``img`` turned upright by its orientation (EXIF, or XMP); unturned when there is none
    or it cannot be read (the pixels are fine: a malformed block is not a corrupt photo).
    The metadata is not parsed or rewritten beyond that one tag: StyGig never uses it after."""
    try:
        orientation = _orientation(img)
    except Exception as e:  # hex text or an IFD that is not what it claims
        log.warning("EXIF orientation unreadable (%s): the photo is not turned", type(e).__name__)
        return img
    method = _TRANSPOSES.get(orientation) if orientation is not None else None
    return img if method is None else img.transpose(method)


# What a decode holds besides its images (the decoder's own buffers, Python objects).
_DECODE_SLACK = 4 << 20
# Channels of a PNG by its colour type (IHDR): grey, RGB, palette, grey + alpha, RGBA.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def decode_bytes(img: Image.Image, min_size: int | None, scans: int = 1) -> int:
    """About the most memory decoding ``img`` (opened, not loaded) holds at once, from its
    header: what :data:`ImageLimits.max_decode_bytes` and the shared budget count.

    * JPEG: the output (reduced in libjpeg when ``min_size`` allows, as :func:`decode_image`
      asks) and its converted copies; a progressive or multi-scan JPEG also keeps every DCT
      coefficient of the full image (per channel, 128 bytes per 8x8 block of its sampling);
    * PNG: the raw rows at their bit depth and channels, and the 8-bit copies after;
    * WebP: Pillow decodes through its animation decoder, which holds several canvases.
    """
    width, height = img.size
    if img.format in ("JPEG", "MPO"):
        layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * 3
        scale = 1
        while min_size is not None and scale < 8 and min(width, height) // (2 * scale) >= min_size:
            scale *= 2
        out = _ceil_div(width, scale) * _ceil_div(height, scale) * max(len(layers), 3) * 3
        if scans <= 1 and not img.info.get("progressive"):
            return out + _DECODE_SLACK
        h_max = max(int(layer[1]) for layer in layers) or 1
        v_max = max(int(layer[2]) for layer in layers) or 1
        blocks = sum(
            _ceil_div(_ceil_div(width * int(h), h_max), 8)
            * _ceil_div(_ceil_div(height * int(v), v_max), 8)
            for _, h, v, *_ in layers
        )
        return blocks * 128 + out + _DECODE_SLACK
    pixels = width * height
    if img.format == "PNG":
        # Pillow holds 1, 2 (16-bit grey) or 4 bytes a pixel; then at most one 8-bit RGBA-size
        # conversion before the reduction, and the sRGB copy when there is none.
        stored = 1 if img.mode in ("1", "L", "P") else 2 if img.mode.startswith("I;16") else 4
        if img.mode.startswith("I;16") and "transparency" in img.info:
            stored += 2  # the 16-bit copy _to_8bit reads a colour key from
        return pixels * (stored + 4 + (4 if min_size is None else 0)) + _DECODE_SLACK
    return pixels * 16 + _DECODE_SLACK  # WebP: ~4 RGBA canvases (247 MB measured at 16 MP)


def png_raw_bytes(data: bytes) -> int:
    """The bytes of a PNG's rows as its header declares them (bit depth x channels): what its
    inflating and unfiltering cost, which pixels alone do not say (16-bit RGBA: 8 a pixel)."""
    if len(data) < 26:
        return 0
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return width * height * _PNG_CHANNELS.get(data[25], 4) * data[24] // 8


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class _DecodeBudget:
    """The memory the larger decodes of all threads may hold at once (see
    :data:`DECODE_BUDGET_BYTES`); a decode that finds no room within :data:`DECODE_WAIT_S` is
    refused as :class:`~stygig.errors.OverloadedError` (503: retry)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        self._room = threading.Condition()

    @contextlib.contextmanager
    def hold(self, cost: int) -> Iterator[None]:
        if cost < SMALL_DECODE_BYTES:
            yield
            return
        cost = min(cost, self.total)  # the largest waits to be alone, never for ever
        deadline = time.monotonic() + DECODE_WAIT_S
        with self._room:
            while self.held + cost > self.total:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OverloadedError(
                        "the server is decoding other large images; retry shortly"
                    )
                self._room.wait(left)
            self.held += cost
        try:
            yield
        finally:
            with self._room:
                self.held -= cost
                self._room.notify_all()


_DECODES = _DecodeBudget(DECODE_BUDGET_BYTES)


_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def _resize_and_crop(img: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """The encoder input, resampling only the region kept: work bounded by ``size``, any shape.

    ``shortest_edge`` is a resize (short side to ``size``) then a centre crop, done in one step:
    the crop is mapped back to a box in the source, so the long side is never resampled whole
    and the pixels are the same as resizing everything and cropping. ``squash`` keeps the whole
    image. ``reducing_gap``: a cheap box pre-shrink of that region, then the exact filter.
    """
    size = spec.size
    width, height = img.size
    box = (0.0, 0.0, float(width), float(height))
    if spec.resize == "shortest_edge":
        scale = size / min(width, height)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        left, top = (new_w - size) // 2, (new_h - size) // 2
        sx, sy = width / new_w, height / new_h  # source pixels per resized pixel
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return img.resize((size, size), _RESAMPLE[spec.interpolation], box=box, reducing_gap=3.0)


def preprocess(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize, centre-crop and normalise one RGB image to a float32 ``(3, size, size)`` array.

    The channels are moved first while still bytes (a quarter of the memory traffic), then
    normalised in place: ~7x faster than normalising the float pixels and transposing those.
    """
    chw = np.asarray(_resize_and_crop(img, spec), dtype=np.uint8).transpose(2, 0, 1)
    out = np.ascontiguousarray(chw).astype(np.float32)
    out -= (np.asarray(spec.mean, dtype=np.float32) * 255.0)[:, None, None]
    out *= (1.0 / (np.asarray(spec.std, dtype=np.float32) * 255.0))[:, None, None]
    return out


def preprocess_batch(imgs: list[Image.Image], spec: PreprocessSpec) -> np.ndarray:
    """Preprocess several images into one float32 ``(n, 3, size, size)`` batch."""
    if not imgs:
        return np.zeros((0, 3, spec.size, spec.size), dtype=np.float32)
    return np.stack([preprocess(img, spec) for img in imgs])


def fit_array(img: Image.Image, max_side: int = 128) -> np.ndarray:
    """The whole image (no crop) shrunk to fit ``max_side``, as uint8 ``(h, w, 3)``: colour input.

    ``reducing_gap`` box-reduces each axis first, so the work is bounded by the output.
    """
    width, height = img.size
    scale = max_side / max(width, height)
    if scale < 1.0:
        img = img.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))),
            Image.Resampling.BILINEAR,
            reducing_gap=2.0,
        )
    return np.asarray(img, dtype=np.uint8)
