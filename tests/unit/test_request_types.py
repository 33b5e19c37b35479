"""Which request content types are told from their bytes (audit: ``image/*``, a range some
clients send for "an image", was a 415; the routes' behaviour: tests/integration/test_server.py)."""

from __future__ import annotations

import pytest

from stygig.errors import UnsupportedMediaError
from stygig.serving import requests as rq


def test_an_image_range_is_told_from_its_bytes(jpeg_bytes: bytes) -> None:
    kind = rq.media_type("Image/*; q=0.8")
    assert kind in rq.OPAQUE_CONTENT_TYPES
    assert rq.told_from_bytes(jpeg_bytes, kind) == "application/x-image"
    assert rq.told_from_bytes(b' {"item_ids": ["sku-1"]}', kind) == "application/json"
    with pytest.raises(UnsupportedMediaError, match="neither an image nor a JSON object"):
        rq.told_from_bytes(b"hello world", kind)


@pytest.mark.parametrize("kind", ["*/*", "application/*", "text/*", "image/gif", "text/plain"])
def test_other_ranges_and_types_are_not(kind: str) -> None:
    assert kind not in rq.OPAQUE_CONTENT_TYPES and kind not in rq.IMAGE_TYPES
