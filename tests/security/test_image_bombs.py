"""Image decoding bombs against a real server (item 1 of the issue "Safe to face untrusted
traffic").

Each test posts hostile image bytes to ``POST /invocations`` of a real ``stygig serve`` running
under a memory cap, and checks that the server refuses them with a 4xx from the header or the
file's structure alone: its peak memory (VmHWM) barely moves, or the answer comes at once, it
stays up, and it still answers a normal photo.

The server runs with a test-only ``sitecustomize`` that logs every use of a Pillow parser other
than JPEG, PNG and WebP, so the tests can see that no other parser is ever handed client bytes
(and logs that it was loaded, so a spy that never ran cannot pass for one that saw nothing).
"""

from __future__ import annotations

import base64
import io
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import encode, garment_image
from tests.integration.server_fixtures import Server
from tests.security.conftest import capped_server
from tests.unit.test_images import (
    COMPRESSED_CHUNKS,
    png_chunk,
    png_with_chunks,
    progressive_bomb,
    psd_bytes,
)

pytestmark = pytest.mark.slow

#: What a refused bomb may add to the server's peak resident memory.
MAX_GROWTH_MB = 300
#: How long a refusal from the file's structure may take, request included (the bombs took
#: seconds of CPU before).
MAX_REFUSAL_SECONDS = 2.0
PARSER_USED = "PILLOW-PARSER-USED"
SPY_LOADED = "PILLOW-PARSER-SPY-LOADED"
SPY = f'''"""Test spy: log any Pillow parser other than JPEG, PNG and WebP that is handed bytes."""
import sys

from PIL import Image

Image.init()
sys.stderr.write("{SPY_LOADED}\\n")
sys.stderr.flush()


def _spy(name, factory):
    def opener(*args, **kwargs):
        sys.stderr.write("{PARSER_USED} " + name + "\\n")
        sys.stderr.flush()
        return factory(*args, **kwargs)

    return opener


for _name, (_factory, _accept) in list(Image.OPEN.items()):
    if _name not in ("JPEG", "PNG", "WEBP"):
        Image.OPEN[_name] = (_spy(_name, _factory), _accept)
'''


def blank_png(width: int, height: int) -> bytes:
    """A black RGB PNG written by hand: rows of zeros deflate ~1000:1, and Pillow would take
    seconds to encode the 40 MP ones."""
    row = bytes(1 + 3 * width)  # filter byte 0, then the pixels
    rows_per_call = max(1, 1_000_000 // len(row))
    deflate = zlib.compressobj(9)
    parts, left = [], height
    while left:
        n = min(rows_per_call, left)
        parts.append(deflate.compress(row * n))
        left -= n
    parts.append(deflate.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


@cache
def tall_strip() -> bytes:
    """8 x 4,999,999 (under 40 MP) in 121 KB: the resize asked for ~125 GB."""
    return blank_png(8, 4_999_999)


@cache
def short_strip() -> bytes:
    """8 x 60,000 in 1.5 KB: +1.3 GB and seconds of CPU."""
    return blank_png(8, 60_000)


@cache
def wide_png() -> bytes:
    """5000 x 4000 (20 MP) in ~60 KB, within the pixels-per-byte limit: a PNG is decoded
    whole (no reduced decode as for JPEG), ~0.3 s of CPU at 20 MP and ~0.6 s at 40 MP."""
    return blank_png(5000, 4000)


@cache
def flat_webp() -> bytes:
    """16000 x 2499 white, lossless WebP: 40 MP in a few dozen bytes."""
    white = Image.new("RGB", (16000, 2499), (255, 255, 255))
    return encode(white, "WEBP", lossless=True, quality=0, method=0)


def vm_hwm_mb(server: Server) -> float:
    """The server process's peak resident memory (VmHWM) in MB."""
    text = Path(f"/proc/{server.process.pid}/status").read_text()
    return (
        int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmHWM"))) / 1024
    )


def post_image(server: Server, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(
        server.url + "/invocations",
        content=body,
        headers={"Content-Type": content_type},
        timeout=120,
    )


def parsers_used(server: Server) -> list[str]:
    """The spy's lines for parsers other than JPEG, PNG and WebP (asserting the spy is there)."""
    lines = server.log_lines()
    assert SPY_LOADED in lines, "the parser spy was not loaded: it would see nothing"
    return [line for line in lines if line.startswith(PARSER_USED)]


@pytest.fixture(scope="module")
def server(sample: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One memory-capped server with the parser spy, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("image-bombs")
    spy_dir = root / "spy"
    spy_dir.mkdir()
    (spy_dir / "sitecustomize.py").write_text(SPY, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(spy_dir), os.environ.get("PYTHONPATH")) if p)
    with capped_server(sample[1], root / "server.log", env={"PYTHONPATH": path}) as running:
        photo = (sample[0] / "queries" / "blue-jeans.jpg").read_bytes()
        assert post_image(running, photo, "image/jpeg").status_code == 200  # warm
        yield running


def assert_still_serving(server: Server, sample: tuple[Path, Path]) -> None:
    assert server.process.poll() is None, "the server died"
    photo = (sample[0] / "queries" / "blue-jeans.jpg").read_bytes()
    response = post_image(server, photo, "image/jpeg")
    assert response.status_code == 200, response.text[:300]


def post_refused(server: Server, body: bytes, content_type: str, status: int, code: str) -> float:
    """Post ``body``, check it is refused with ``status`` and error ``code``; the request's
    wall-clock seconds."""
    start = time.perf_counter()
    response = post_image(server, body, content_type)
    elapsed = time.perf_counter() - start
    assert response.status_code == status, response.text[:300]
    assert response.json()["error"]["code"] == code
    return elapsed


@pytest.mark.parametrize(
    ("make", "content_type", "status", "code"),
    [
        (tall_strip, "image/png", 400, "image_aspect_ratio"),
        (short_strip, "image/png", 400, "image_aspect_ratio"),
        (flat_webp, "image/webp", 413, "image_too_compressed"),
        (wide_png, "image/png", 413, "image_too_large"),
    ],
    ids=["png-8x4999999", "png-8x60000", "webp-16000x2499-lossless", "png-5000x4000"],
)
def test_bombs_are_refused_from_the_header(
    server: Server,
    sample: tuple[Path, Path],
    make: Callable[[], bytes],
    content_type: str,
    status: int,
    code: str,
) -> None:
    """Item 1: a small file whose header promises a huge or extremely elongated image. Before,
    the 8 x 4,999,999 PNG made the resize ask for ~125 GB (the capped server got a MemoryError
    or died), the 8 x 60,000 PNG cost +1.5 GB and the WebP +600 MB, all answered 200."""
    body = make()
    before = vm_hwm_mb(server)
    post_refused(server, body, content_type, status, code)
    assert_still_serving(server, sample)
    assert vm_hwm_mb(server) - before < MAX_GROWTH_MB


@pytest.mark.parametrize("name", ["GIF", "TIFF", "BMP", "ICO", "PSD"])
def test_other_formats_are_refused_without_being_parsed(
    server: Server, sample: tuple[Path, Path], name: str
) -> None:
    """Item 1: hostile bytes could reach any of Pillow's 43 parsers (the old code let Pillow try
    every format, then refused the result). Now only the JPEG, PNG and WebP parsers ever run;
    other images are named from their signature and refused with 415, whatever the client's
    content type says."""
    body = psd_bytes() if name == "PSD" else encode(garment_image(), name)
    response = post_image(server, body, "image/png")
    assert response.status_code == 415, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type" and name in error["message"]
    assert parsers_used(server) == []
    assert_still_serving(server, sample)


@cache
def scan_bomb() -> bytes:
    """1500 x 1500 grey progressive JPEG, its last scan repeated 3,000 times: 54 KB, 4.5 s."""
    return progressive_bomb(1500, 3000)


@cache
def icc_bomb() -> bytes:
    """224 x 224 PNG with 1,500 iCCP chunks that Pillow inflates to 1 MB each: 1.6 MB, 3.5 s."""
    return png_with_chunks(COMPRESSED_CHUNKS["iCCP"] * 1500, size=(224, 224))


@pytest.mark.parametrize(
    ("make", "content_type", "code"),
    [
        (scan_bomb, "image/jpeg", "image_too_many_scans"),
        (icc_bomb, "image/png", "image_too_many_chunks"),
    ],
    ids=["jpeg-3006-scans", "png-1500-iccp"],
)
def test_cpu_bombs_are_refused_from_the_structure(
    server: Server,
    sample: tuple[Path, Path],
    make: Callable[[], bytes],
    content_type: str,
    code: str,
) -> None:
    """Item 1: decode work that neither pixels nor bytes bound. libjpeg decodes every scan over
    the whole image, and Pillow inflates every iCCP chunk up to 1 MB: before, these small files
    (within every pixel, byte and pixels-per-byte limit) were answered 200 after seconds of CPU,
    and a 6 MB body of scans costs ~35 min, in a decode thread the request timeout does not
    stop. Now they are refused from the structure at once."""
    elapsed = post_refused(server, make(), content_type, 413, code)
    assert elapsed < MAX_REFUSAL_SECONDS
    assert_still_serving(server, sample)


def truncated_png(width: int, height: int) -> bytes:
    """An RGBA PNG whose image data stops at 90 %, with a proper IEND: Pillow allocates and
    fills most of the image before it finds the rest missing (a 400)."""
    deflate = zlib.compressobj(9)
    row = bytes(1 + 4 * width)  # filter byte 0, then the pixels
    packed = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", packed[: int(len(packed) * 0.9)])
        + png_chunk(b"IEND", b"")
    )


def rss_mb(server: Server) -> float:
    """The server process's resident memory now (VmRSS) in MB."""
    text = Path(f"/proc/{server.process.pid}/status").read_text()
    return (
        int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmRSS"))) / 1024
    )


def test_refused_photos_leave_no_memory_behind(server: Server, sample: tuple[Path, Path]) -> None:
    """A refused photo's memory is freed when the refusal is sent (review, session 40: the
    awaiting frame kept the failed work's traceback in a cycle, so each truncated 16 MP PNG
    held its 64 MB image until a rare full garbage collection: 80 of them took the server to
    2.4 GB and into lasting 503s for valid large photos)."""
    body = truncated_png(4000, 4000)
    assert len(body) < 200_000
    post_refused(server, body, "image/png", 400, "invalid_image")
    before = rss_mb(server)
    seen = []
    for _ in range(6):
        post_refused(server, body, "image/png", 400, "invalid_image")
        seen.append(rss_mb(server) - before)
    assert max(seen) < 100, f"resident memory grew by {[round(x) for x in seen]} MB"
    assert_still_serving(server, sample)


@cache
def busy_webp(side: int) -> bytes:
    """A lossy WebP of ``side`` x ``side`` within every per-photo limit (16 MP at 4,000), a
    few tens of KB: decoded whole."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (120, 60, 200)).save(out, "WEBP", quality=80)
    return out.getvalue()


def test_the_photos_of_one_request_share_one_decode_budget(
    server: Server, sample: tuple[Path, Path]
) -> None:
    """Review, session 42: each photo was bounded alone, so 8 WebPs of 16 MP (28 KB each, all
    within every limit) made one 304 KB request cost 2.6 s of CPU. A request's photos
    together may cost what two photos at the limit do: 8 of them are a 413 from their headers
    at once; two are decoded."""
    many = [base64.b64encode(busy_webp(4000)).decode()] * 8
    start = time.perf_counter()
    response = httpx.post(f"{server.url}/invocations", json={"images_b64": many}, timeout=60)
    elapsed = time.perf_counter() - start
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"]["code"] == "images_too_costly"
    assert elapsed < MAX_REFUSAL_SECONDS
    two = httpx.post(f"{server.url}/invocations", json={"images_b64": many[:2]}, timeout=60)
    assert two.status_code == 200, two.text[:300]
    assert_still_serving(server, sample)
