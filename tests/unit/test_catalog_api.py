"""The catalogue routes' pieces that need no server."""

from __future__ import annotations

from stygig.serving.catalog_api import image_url


def test_an_image_url_keeps_the_whole_id_in_its_path_segment() -> None:
    """Unencoded, an id with '?' or '#' cut the page's thumbnail URL short (a query or a
    fragment), and one with '%' or a space was read as other characters."""
    assert image_url("sku-0014") == "/v1/items/sku-0014/image"
    assert image_url("a b?c#d%e&f") == "/v1/items/a%20b%3Fc%23d%25e%26f/image"
    assert image_url("caf\u00e9") == "/v1/items/caf%C3%A9/image"
