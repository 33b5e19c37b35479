"""``POST /v1/outfits/score`` and ``candidate_ids`` on a real server (with a bearer token):
the library's numbers over HTTP, the OpenAPI components, and every mistake a clear 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from stygig.engine import Recommender
from stygig.recommendation import MAX_OUTFIT_ITEMS, OutfitRequest
from tests.conftest import closed_schema
from tests.integration.server_fixtures import Server, running_server

pytestmark = pytest.mark.slow

TOKEN = "outfit-score-token-0123456789"
SET = ["sku-0014", "sku-0040", "sku-0085", "sku-0115"]
SECRET = "client-text-never-echoed"


@pytest.fixture(scope="module")
def server(sample: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("outfit-score")
    (root / "token").write_text(TOKEN)
    flags = ("--auth-token-file", str(root / "token"))
    with running_server(sample[1], root / "server.log", *flags) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=30.0, headers=headers) as c:
        yield c


@pytest.fixture(scope="module")
def rec(sample: tuple[Path, Path]) -> Recommender:
    return Recommender.from_path(sample[1])


def _without_timings(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "timings_ms"}


def test_the_score_over_http_is_the_librarys(client: httpx.Client, rec: Recommender) -> None:
    r = client.post("/v1/outfits/score", json={"item_ids": SET})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert _without_timings(body) == _without_timings(rec.score_outfit(SET).to_dict())
    assert len(body["pairs"]) == len(SET) * (len(SET) - 1) // 2
    assert [i["id"] for i in body["items"]] == SET
    plain = client.post("/v1/outfits/score", json={"item_ids": SET[:2], "use_color": False})
    expected = rec.score_outfit(OutfitRequest(tuple(SET[:2]), use_color=False)).to_dict()
    assert _without_timings(plain.json()) == _without_timings(expected)


def test_openapi_documents_the_route_and_answers_validate_strictly(
    client: httpx.Client,
) -> None:
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    route = document["paths"]["/v1/outfits/score"]["post"]
    body_ref = route["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    answer_ref = route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref == "#/components/schemas/OutfitScoreRequest"
    assert answer_ref == "#/components/schemas/OutfitScore"
    assert set(schemas["OutfitScoreRequest"]["properties"]) == set(
        OutfitRequest.__dataclass_fields__
    )
    assert "candidate_ids" in schemas["Options"]["properties"]
    validator = jsonschema.Draft202012Validator(
        {**closed_schema(schemas["OutfitScore"]), "components": {"schemas": closed_schema(schemas)}}
    )
    data = client.post("/v1/outfits/score", json={"item_ids": SET}).json()
    assert not [e.message for e in validator.iter_errors(data)]
    request_validator = jsonschema.Draft202012Validator(
        {**schemas["OutfitScoreRequest"], "components": {"schemas": schemas}}
    )
    assert request_validator.is_valid({"item_ids": SET})
    assert not request_validator.is_valid({"item_ids": SET[:1]})


def test_candidate_ids_rank_a_shortlist_over_http(client: httpx.Client, rec: Recommender) -> None:
    """What fill-in-the-blank needs from outside: the partial outfit, four answers, a ranking."""
    candidates = ["sku-0030", "sku-0040", "sku-0050", "sku-0041"]
    r = client.post("/v1/recommend", json={"item_ids": ["sku-0014"], "candidate_ids": candidates})
    assert r.status_code == 200, r.text
    ranked = [(i["id"], i["score"]) for i in r.json()["items"]]
    expected = rec.score_items(["sku-0014"], candidates).tolist()
    assert sorted(ranked, key=lambda x: x[0]) == sorted(
        (c, pytest.approx(s, abs=1e-4)) for c, s in zip(candidates, expected, strict=True)
    )
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    by_query = client.get(
        "/v1/items/sku-0014/recommendations", params={"candidate_ids": ",".join(candidates)}
    )
    assert by_query.status_code == 200
    assert [i["id"] for i in by_query.json()["items"]] == [i for i, _ in ranked]


BAD: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "one_item": ("/v1/outfits/score", {"json": {"item_ids": ["sku-0014"]}}, 422, "invalid_options"),
    "repeated_item": (
        "/v1/outfits/score",
        {"json": {"item_ids": ["sku-0014", "sku-0014"]}},
        422,
        "invalid_options",
    ),
    "too_many": (
        "/v1/outfits/score",
        {"json": {"item_ids": [f"sku-{n:04d}" for n in range(1, MAX_OUTFIT_ITEMS + 2)]}},
        422,
        "invalid_options",
    ),
    "unknown_item": (
        "/v1/outfits/score",
        {"json": {"item_ids": ["sku-0014", SECRET]}},
        404,
        "unknown_item",
    ),
    "unknown_key": (
        "/v1/outfits/score",
        {"json": {"item_ids": SET, SECRET: 1}},
        422,
        "invalid_options",
    ),
    "not_a_list": ("/v1/outfits/score", {"json": {"item_ids": SECRET}}, 422, "invalid_options"),
    "no_ids": ("/v1/outfits/score", {"json": {}}, 422, "invalid_options"),
    "colour_as_text": (
        "/v1/outfits/score",
        {"json": {"item_ids": SET, "use_color": "no"}},
        422,
        "invalid_options",
    ),
    "malformed_json": (
        "/v1/outfits/score",
        {"content": b'{"item_ids": [', "ct": "application/json"},
        400,
        "malformed_json",
    ),
    "not_json": (
        "/v1/outfits/score",
        {"content": SECRET.encode(), "ct": "text/plain"},
        415,
        "unsupported_content_type",
    ),
    "unknown_candidate": (
        "/v1/recommend",
        {"json": {"item_ids": ["sku-0014"], "candidate_ids": ["sku-0040", SECRET]}},
        404,
        "unknown_item",
    ),
    "candidate_in_query": (
        "/v1/recommend",
        {"json": {"item_ids": ["sku-0014"], "candidate_ids": ["sku-0014"]}},
        422,
        "invalid_options",
    ),
    "repeated_candidate": (
        "/v1/recommend",
        {"json": {"item_ids": ["sku-0014"], "candidate_ids": ["sku-0040", "sku-0040"]}},
        422,
        "invalid_options",
    ),
    # Review (s40): the route read no query string and ignored it silently.
    "query_string": (
        f"/v1/outfits/score?use_color=false&{SECRET}=1",
        {"json": {"item_ids": SET}},
        422,
        "invalid_options",
    ),
    "candidates_not_strings": (
        "/v1/recommend",
        {"json": {"item_ids": ["sku-0014"], "candidate_ids": [1, 2]}},
        422,
        "invalid_options",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_mistakes_are_clear_4xx_errors_that_echo_nothing(client: httpx.Client, case: str) -> None:
    path, spec, status, code = BAD[case]
    if "json" in spec:
        r = client.post(path, json=spec["json"])
    else:
        r = client.post(path, content=spec["content"], headers={"content-type": spec["ct"]})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"]
    assert SECRET not in r.text
    assert client.post("/v1/outfits/score", json={"item_ids": SET}).status_code == 200


def test_the_route_is_behind_the_token(server: Server) -> None:
    body = json.dumps({"item_ids": SET})
    for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"}):
        r = httpx.post(
            server.url + "/v1/outfits/score",
            content=body,
            headers={"content-type": "application/json", **headers},
        )
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
