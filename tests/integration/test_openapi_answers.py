"""The OpenAPI document describes every successful answer (review, s41: eleven operations
documented ``application/json: {}`` for their 200, three of them beside the image or text they
really send).

The document is checked on its own (every 2xx JSON answer has a schema, every reference
resolves, no route that answers a photo or text advertises JSON), then against a real server
with every optional part on (async jobs and their listing, a change log, example photos): each
operation's real answers, for every status they come with, validate against the schema the
document gives for that status and media type, JSON ones "closed" (no undocumented key
anywhere). /readyz is checked not ready too, on an app that has not loaded its model.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient

from stygig.serving.app import ServerConfig, create_app
from tests.conftest import closed_schema
from tests.integration.test_jobs import async_server, wait_for

pytestmark = pytest.mark.slow

JSON = "application/json"
BINARY = {"type": "string", "format": "binary"}
#: The routes whose successful answers are not JSON.
NOT_JSON = {"/metrics", "/v1/items/{item_id}/image", "/v1/examples/{name}"}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield method.upper(), path, operation


class Answers:
    """Checks real answers against a server's document; remembers the operations checked."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schemas = closed_schema(document["components"]["schemas"])
        self.checked: set[tuple[str, str]] = set()

    def check(self, method: str, path: str, answer: httpx.Response) -> Any:
        """Validate ``answer`` (to ``method path``, a path of the document) against what the
        document says of its status and media type; its JSON, if any."""
        operation = self.document["paths"][path][method.lower()]
        status = str(answer.status_code)
        assert status in operation["responses"], (method, path, status, answer.text[:200])
        content = operation["responses"][status].get("content", {})
        self.checked.add((method, path))
        if answer.status_code == 304:
            assert not content and not answer.content, (method, path)
            return None
        media = answer.headers["content-type"]
        assert media in content, (method, path, status, media, sorted(content))
        schema = content[media]["schema"]
        if media != JSON:
            assert schema in (BINARY, {"type": "string"}), (method, path, schema)
            return None
        data = answer.json()
        validator = jsonschema.Draft202012Validator(
            {**closed_schema(schema), "components": {"schemas": self.schemas}}
        )
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]
        assert not errors, (method, path, status, errors)
        return data


def _check_document(document: dict[str, Any]) -> None:
    """Every successful answer has a schema; JSON is advertised only where JSON is sent."""
    schemas = document["components"]["schemas"]
    for ref in set(_refs(document)):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for method, path, operation in _operations(document):
        answers = {s: r for s, r in operation["responses"].items() if s[0] in "23"}
        assert any(s.startswith("2") for s in answers), (method, path)
        for status, response in answers.items():
            content = response.get("content", {})
            if status in ("204", "304"):
                assert not content, (method, path, status)
                continue
            assert content, (method, path, status)
            for media, entry in content.items():
                schema = entry.get("schema")
                assert schema, (method, path, status, media)  # neither missing nor {}
                if media != JSON:
                    assert schema in (BINARY, {"type": "string"}), (method, path, media, schema)
            # An answer is JSON or not: a photo route advertising JSON too was the bug.
            assert list(content) == [JSON] or JSON not in content, (method, path, status)
            assert (JSON in content) is (path not in NOT_JSON), (method, path, status)


@pytest.fixture
def not_loaded(sample: tuple[Path, Path]) -> Iterator[TestClient]:
    """An app whose model has not loaded (its lifespan never ran): the state /readyz says
    503 in while a server starts."""
    app = create_app(ServerConfig(artifact=sample[1]))
    try:
        yield TestClient(app)
    finally:
        app.state.service.pool.shutdown()


def test_readyz_not_ready_is_documented(not_loaded: TestClient) -> None:
    document = not_loaded.get("/openapi.json").json()
    _check_document(document)  # a server without the optional routes
    assert "/async/jobs" not in document["paths"] and "JobList" not in str(document)
    answers = Answers(document)
    ready = answers.check("GET", "/readyz", not_loaded.get("/readyz"))
    assert ready["ready"] is False and ready["encoder"] is None and ready["artifact"] is None
    assert ready["batching"]["max_batch"] >= 1
    health = answers.check("GET", "/healthz", not_loaded.get("/healthz"))
    assert health == {"status": "alive", "ready": False}
    ping = not_loaded.get("/ping")
    assert ping.status_code == 503 and ping.json()["error"]["code"] == "not_ready"
    answers.check("GET", "/ping", ping)


def test_always_sent_fields_are_required_and_every_request_form_is_documented(
    not_loaded: TestClient,
) -> None:
    """Review, session 42: ``GenderDecision.hedged/confidence/guess`` and
    ``ArtifactRef.version/sequence/catalog``, in every answer, were optional in the schema;
    the form's ``images``/``file`` fields and per-option fields, the octet-stream bodies, and
    ``candidate_ids``' uniqueness were not documented."""
    document = not_loaded.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert set(schemas["GenderDecision"]["required"]) == set(
        schemas["GenderDecision"]["properties"]
    )
    assert set(schemas["ArtifactRef"]["required"]) == set(schemas["ArtifactRef"]["properties"])
    for path in ("/invocations", "/v1/recommend"):
        content = document["paths"][path]["post"]["requestBody"]["content"]
        for opaque in ("application/octet-stream", "binary/octet-stream"):
            assert len(content[opaque]["schema"]["oneOf"]) == 2, (path, opaque)
        body = content[JSON]["schema"]
        assert body["properties"]["candidate_ids"]["uniqueItems"] is True
    form = document["paths"]["/v1/recommend"]["post"]["requestBody"]["content"]
    fields = form["multipart/form-data"]["schema"]["properties"]
    assert {"image", "images", "file", "item_ids", "options", "k", "mode", "filters"} <= set(fields)
    assert fields["images"]["items"] == BINARY
    assert set(schemas["Options"]["properties"]) <= set(fields)


def test_every_answer_validates_closed_against_its_documented_schema(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    catalog, built = sample
    artifact = tmp_path / "artifact"
    shutil.copytree(built, artifact)
    gate = tmp_path / "gate"
    gate.mkdir()
    flags = (
        "--async-list-jobs",
        "--change-log",
        str(tmp_path / "changes"),
        "--examples",
        str(catalog / "queries"),
    )
    with (
        async_server(artifact, tmp_path, *flags, gate=gate) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        wait_for(lambda: client.get("/readyz").status_code == 200)
        document = client.get("/openapi.json").json()
        _check_document(document)
        answers = Answers(document)

        def check(method: str, path: str, url: str | None = None, **kwargs: Any) -> Any:
            return answers.check(method, path, client.request(method, url or path, **kwargs))

        # -- health, the page's routes, the catalogue -------------------------------------
        assert check("GET", "/ping") == {"status": "ok"}
        assert check("GET", "/healthz") == {"status": "alive", "ready": True}
        assert check("GET", "/execution-parameters")["BatchStrategy"] == "SINGLE_RECORD"
        assert check("GET", "/readyz")["ready"] is True
        check("GET", "/metrics")
        config = check("GET", "/v1/config")
        assert config["examples"] > 0 and config["categories"] and config["slots"]
        example = check("GET", "/v1/examples")["examples"][0]
        photo_path = "/v1/examples/{name}"
        check("GET", photo_path, example["url"])
        etag = client.get(example["url"]).headers["etag"]
        check("GET", photo_path, example["url"], headers={"if-none-match": etag})
        item = "sku-0014"
        check("GET", "/v1/items/{item_id}", f"/v1/items/{item}")
        image = f"/v1/items/{item}/image"
        check("GET", "/v1/items/{item_id}/image", image)
        etag = client.get(image).headers["etag"]
        check("GET", "/v1/items/{item_id}/image", image, headers={"if-none-match": etag})
        assert len(check("GET", "/v1/catalog", params={"limit": 3})["items"]) == 3

        # -- recommendations ---------------------------------------------------------------
        jpeg = (catalog / "queries" / "blue-jeans.jpg").read_bytes()
        check("POST", "/invocations", json={"image_b64": base64.b64encode(jpeg).decode()})
        check("POST", "/v1/recommend", files={"image": ("j.jpg", jpeg, "image/jpeg")})
        check("GET", "/v1/items/{item_id}/recommendations", f"/v1/items/{item}/recommendations")
        check("POST", "/v1/outfits/score", json={"item_ids": [item, "sku-0040"]})

        # -- the living catalogue: the version without and with `since` -------------------
        before = check("GET", "/v1/catalog/version")
        assert "unavailable_since" not in before
        assert check("GET", "/v1/catalog/version", params={"since": 0})["unavailable_since"] == []
        change = {"op": "update", "id": item, "set": {"available": False}}
        assert check("POST", "/v1/catalog/changes", json=change)["applied"] == 1
        since = check("GET", "/v1/catalog/version", params={"since": before["sequence"]})
        assert since["unavailable_since"] == [item] and since["complete"] is True
        assert check("POST", "/v1/catalog/reload")["reloaded"] is False

        # -- async jobs: submitted, running (no output yet), succeeded, failed ------------
        submitted = check("POST", "/async/invocations", json={"item_ids": ["sku-0040"], "k": 2})
        job = submitted["InferenceId"]
        wait_for(lambda: (gate / "started-1").exists())  # held running by the gate
        status = f"/async/jobs/{job}"
        assert check("GET", "/async/jobs/{job_id}", status)["Status"] == "running"
        early = check("GET", "/async/jobs/{job_id}/output", f"{status}/output")
        assert early == {"InferenceId": job, "Status": "running"}  # a 409
        assert check("GET", "/async/jobs")["jobs"][0]["Error"] is None
        for n in range(1, 4):
            (gate / f"go-{n}").touch()
        wait_for(lambda: client.get(status).json()["Status"] == "succeeded")
        assert check("GET", "/async/jobs/{job_id}", status)["FinishedAt"]
        assert check("GET", "/async/jobs/{job_id}/output", f"{status}/output")["items"]
        broken = check(
            "POST",
            "/async/invocations",
            content=jpeg[: len(jpeg) // 2],  # its header whole: it fails as a job
            headers={"content-type": "image/jpeg"},
        )["InferenceId"]
        status = f"/async/jobs/{broken}"
        wait_for(lambda: client.get(status).json()["Status"] == "failed")
        assert check("GET", "/async/jobs/{job_id}", status)["Error"]["code"]
        assert check("GET", "/async/jobs/{job_id}/output", f"{status}/output")["error"]["code"]
        listing = check("GET", "/async/jobs", params={"limit": 1})
        assert listing["counts"] == {"queued": 0, "running": 0, "succeeded": 1, "failed": 1}
        assert listing["next_after"] is not None

        # Every operation of the document had real answers checked.
        assert answers.checked == {(m, p) for m, p, _ in _operations(document)}
