"""Integer query parameters are plain decimal digits (audit: pydantic's lax reading took
``/v1/catalog?limit=+5`` as 5, and `` 5 ``, ``5.0``, ``1_000`` alike), on every route that
declares one, documented as before: an integer with its bounds. The app's model is never
loaded: the parameters are refused before a route's handler runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stygig.recommendation import OPTION_NAMES
from stygig.serving.app import ServerConfig, create_app
from stygig.serving.async_api import AsyncConfig

#: Texts pydantic read as an integer (the first six) and others that are none.
NOT_DIGITS = ["+5", " 5", "5 ", "5.0", "1_0", "\u0665", "-0", "0x5", "5e0", "", "1" * 20]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("query-ints")
    jobs = AsyncConfig(jobs_db=root / "jobs.db", output=str(root / "out"), list_jobs=True)
    app = create_app(ServerConfig(artifact=root / "no-artifact", async_jobs=jobs))
    try:
        yield TestClient(app)  # no lifespan: nothing loads, nothing runs in the background
    finally:
        app.state.service.pool.shutdown()


def _integer_parameters(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(path, parameter)`` for every integer query parameter of a GET route that the route
    declares itself (the recommender's options are read and refused by their own rule), its
    ``schema`` the integer's own: an optional one (``int | None``) is documented as ``anyOf``
    (code review, session 49: ``/v1/catalog/version?since=`` was missed that way)."""
    found = []
    for path, operations in document["paths"].items():
        for param in operations.get("get", {}).get("parameters", []):
            schema = param.get("schema", {})
            branches = [schema, *schema.get("anyOf", [])]
            ints = [b for b in branches if b.get("type") == "integer"]
            if param["in"] == "query" and ints and param["name"] not in OPTION_NAMES:
                found.append((path, {**param, "schema": ints[0]}))
    return found


def test_every_integer_query_parameter_is_documented_with_its_bounds(client: TestClient) -> None:
    found = _integer_parameters(client.get("/openapi.json").json())
    names = {(path, param["name"]) for path, param in found}
    assert names == {
        ("/v1/catalog", "limit"),
        ("/v1/catalog", "offset"),
        ("/async/jobs", "limit"),
        ("/async/jobs", "after"),
        ("/v1/catalog/version", "since"),
    }
    for path, param in found:  # minimum/maximum, never pydantic's own ge/le (see query_int)
        schema = param["schema"]
        assert {"minimum", "maximum"} <= set(schema) and not {"ge", "le"} & set(schema), path


@pytest.mark.parametrize("text", NOT_DIGITS)
def test_an_integer_query_parameter_must_be_decimal_digits(client: TestClient, text: str) -> None:
    for path, param in _integer_parameters(client.get("/openapi.json").json()):
        name = param["name"]
        r = client.get(path, params={name: text})
        assert r.status_code == 422, (path, name, text, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_request" and f"query.{name}:" in error["message"]
        assert "decimal digits" in error["message"], error
        # Digits within the bounds pass the parameter (the unloaded catalogue is a 503).
        fine = client.get(path, params={name: str(param["schema"]["minimum"]).zfill(3)})
        assert fine.status_code != 422, (path, name, fine.text)


def test_digits_out_of_bounds_are_refused_as_before(client: TestClient) -> None:
    r = client.get("/v1/catalog", params={"limit": "101"})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == "query.limit: Input should be less than or equal to 100"
