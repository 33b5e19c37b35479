"""What the shop shows for an item: a small square JPEG made once, at build time.

A build makes one thumbnail per item from the photo it has already decoded (no second decode)
and stores them all in the artifact as two top-level files, so the manifest's checksums cover
them and a server can show product images with no access to the original photos::

    thumbnails.bin    the JPEGs, back to back
    thumbnails.json   {"format": "jpeg", "side": 256, "items": {id: [offset, length]}}

:class:`ItemImages` answers "the picture for item X": the stored thumbnail, or, for an artifact
built before thumbnails existed, one made on first request from the original photo (when that
file is still reachable) and kept in a small in-memory cache.
"""

from __future__ import annotations

import io
import json
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stygig.errors import ArtifactError, StygigError

__all__ = [
    "THUMBNAILS_BIN",
    "THUMBNAILS_INDEX",
    "THUMBNAIL_SIDE",
    "ItemImages",
    "make_thumbnail",
    "write_thumbnails",
]

THUMBNAIL_SIDE = 256
THUMBNAIL_QUALITY = 84
THUMBNAILS_BIN = "thumbnails.bin"
THUMBNAILS_INDEX = "thumbnails.json"


def _border_color(img: Image.Image) -> tuple[int, int, int]:
    """The median colour of the image's outermost pixels: the packshot's background."""
    arr = np.asarray(img, dtype=np.uint8)
    edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    r, g, b = (int(v) for v in np.median(edge, axis=0))
    return r, g, b


def make_thumbnail(
    img: Image.Image, side: int = THUMBNAIL_SIDE, quality: int = THUMBNAIL_QUALITY
) -> bytes:
    """A ``side`` x ``side`` JPEG of a decoded RGB photo: whole garment, padded, never cropped.

    The photo is scaled to fit and centred on a square of its own background colour, so product
    cards line up without cutting off a sleeve or a heel.
    """
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    width, height = rgb.size
    scale = min(side / width, side / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0 if scale < 1 else None)
    canvas = Image.new("RGB", (side, side), _border_color(rgb))
    canvas.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=quality, optimize=True, progressive=True)
    return buf.getvalue()


def write_thumbnails(
    directory: Path, thumbnails: Iterable[tuple[str, bytes | None]], side: int = THUMBNAIL_SIDE
) -> None:
    """Write ``thumbnails.bin`` and ``thumbnails.json`` into ``directory``.

    Args:
        directory: the artifact directory being written.
        thumbnails: ``(item id, JPEG bytes)`` pairs; ``None`` bytes (no thumbnail) are skipped.
        side: the thumbnails' side, recorded in the index.
    """
    offsets: dict[str, list[int]] = {}
    position = 0
    with (directory / THUMBNAILS_BIN).open("wb") as handle:
        for item_id, data in thumbnails:
            if not data:
                continue
            handle.write(data)
            offsets[item_id] = [position, len(data)]
            position += len(data)
    index = {"format": "jpeg", "side": side, "count": len(offsets), "items": offsets}
    (directory / THUMBNAILS_INDEX).write_text(
        json.dumps(index, separators=(",", ":")), encoding="utf-8"
    )


class ItemImages:
    """The picture the shop shows for each item of an artifact, read lazily and thread-safely.

    Args:
        root: the artifact directory.
        originals: item id -> path of the original photo; used only for items with no stored
            thumbnail (artifacts built before thumbnails existed).
        cache_size: thumbnails made on the fly that are kept in memory.
    """

    def __init__(
        self, root: Path, originals: Mapping[str, str] | None = None, cache_size: int = 512
    ) -> None:
        self.root = Path(root)
        self.originals = dict(originals or {})
        self.cache_size = cache_size
        self._made: OrderedDict[str, bytes] = OrderedDict()  # made on the fly (_lock)
        self._lock = threading.Lock()
        # The index and the open file are taken together, now: a folder replaced in place
        # later (a rebuild, a compaction into the served folder) does not mix this version's
        # offsets with the next version's bytes (review, session 51: an item's picture was a
        # slice of another's, served as a JPEG, until the server reloaded).
        self._offsets, self._fd = _open_store(self.root)
        if self._fd is not None:
            weakref.finalize(self, os.close, self._fd)

    @property
    def stored(self) -> bool:
        """Whether the artifact carries build-time thumbnails."""
        return bool(self._offsets)

    def get(self, item_id: str) -> bytes | None:
        """The JPEG for ``item_id``, or ``None`` when the shop has no picture of it."""
        span = self._offsets.get(item_id)
        if span is not None and self._fd is not None:  # spans come with their open file
            offset, length = span
            data = os.pread(self._fd, length, offset)  # within the file: checked when opened
            if len(data) != length:
                raise ArtifactError(f"{THUMBNAILS_BIN} is shorter than its index says")
            return data
        return self._from_original(item_id)

    def _from_original(self, item_id: str) -> bytes | None:
        with self._lock:
            cached = self._made.get(item_id)
            if cached is not None:
                self._made.move_to_end(item_id)
                return cached
        path = self.originals.get(item_id)
        if path is None or not Path(path).is_file():
            return None
        from stygig.images import CATALOG_LIMITS, decode_image

        try:  # the catalogue's own photo: its limits
            data = make_thumbnail(
                decode_image(path, min_size=THUMBNAIL_SIDE, limits=CATALOG_LIMITS)
            )
        except StygigError:
            return None
        with self._lock:
            self._made[item_id] = data
            while len(self._made) > self.cache_size:
                self._made.popitem(last=False)
        return data


#: The largest thumbnail an index may name (a 256 px JPEG is ~10-30 KB).
MAX_THUMBNAIL_BYTES = 4 << 20


def _open_store(root: Path) -> tuple[dict[str, tuple[int, int]], int | None]:
    """The thumbnails index and the thumbnails file opened, every span checked against the
    open file: whole numbers, within it, at most :data:`MAX_THUMBNAIL_BYTES` (review, session
    51: a tampered index was a 500 per request, or a 4 GB read). No index: ``({}, None)``."""
    path = root / THUMBNAILS_INDEX
    if not path.is_file():
        return {}, None
    try:
        fd = os.open(root / THUMBNAILS_BIN, os.O_RDONLY)
    except OSError as e:
        raise ArtifactError(f"{THUMBNAILS_BIN} cannot be read: {e.strerror or e}") from e
    try:
        size = os.fstat(fd).st_size
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
        spans: dict[str, tuple[int, int]] = {}
        for key, span in raw["items"].items():
            offset, length = span
            if not (
                type(offset) is int
                and type(length) is int
                and offset >= 0
                and 0 < length <= MAX_THUMBNAIL_BYTES
                and offset + length <= size
            ):
                raise ValueError(f"an item's span is not within {THUMBNAILS_BIN}")
            spans[str(key)] = (offset, length)
        return spans, fd
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        os.close(fd)
        raise ArtifactError(f"{THUMBNAILS_INDEX} cannot be read: {type(e).__name__}") from e
    except BaseException:
        os.close(fd)
        raise
