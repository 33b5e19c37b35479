"""``stygig deploy transform`` against moto's server mode and a real StyGig server.

moto records a transform job (and reports it ``Completed`` at once) but runs nothing, so the
SageMaker client is wrapped: after moto has accepted ``CreateTransformJob``, the job is played
as Batch Transform plays it (:func:`play_transform_job`): every input of its manifest (or
prefix) POSTed to the server's ``/invocations`` with the job's content type (each line on its
own for ``SplitType=Line``), the answers written to ``<output>/<input name>.out``; a refused
record fails the job, as on SageMaker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stygig import storage
from stygig.cli import main
from stygig.deploy import sagemaker as sm_api
from tests.integration.server_fixtures import Server
from tests.integration.test_sagemaker_async import (
    BUCKET,
    create_async_endpoint,
    moto_env,
    stygig,
)

boto3 = pytest.importorskip("boto3")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:botocore.*"),
]

__all__ = ["moto_env", "stygig"]  # fixtures used here


def _inputs(source: dict[str, str]) -> list[str]:
    if source["S3DataType"] == "S3Prefix":
        return storage.list_keys(source["S3Uri"])
    manifest = json.loads(storage.read_bytes(source["S3Uri"]))
    prefix = manifest[0]["prefix"]
    return [prefix + name for name in manifest[1:]]


def play_transform_job(server_url: str, request: dict[str, Any]) -> str | None:
    """Run the job as Batch Transform would; the failure reason, or ``None``."""
    job_input = request["TransformInput"]
    source = job_input["DataSource"]["S3DataSource"]
    prefix = source["S3Uri"] if source["S3DataType"] == "S3Prefix" else None
    output = request["TransformOutput"]["S3OutputPath"].rstrip("/")
    with httpx.Client(timeout=60) as client:
        for key in _inputs(source):
            if prefix is None:
                base = json.loads(storage.read_bytes(source["S3Uri"]))[0]["prefix"]
            else:
                base = prefix
            body = storage.read_bytes(key)
            records = body.splitlines() if job_input["SplitType"] == "Line" else [body]
            answers = []
            for record in records:
                answer = client.post(
                    f"{server_url}/invocations",
                    content=record,
                    headers={
                        "Content-Type": job_input["ContentType"],
                        "Accept": "application/json",
                    },
                )
                if answer.status_code != 200:
                    return f"ClientError: {answer.status_code} for {key[len(base) :]}"
                answers.append(answer.content)
            storage.write_bytes(f"{output}/{key[len(base) :]}.out", b"\n".join(answers))
    return None


class _PlayedTransforms:
    """A SageMaker client whose transform jobs really run (against the StyGig server)."""

    def __init__(self, client: Any, server_url: str) -> None:
        self._client = client
        self.server_url = server_url
        self.requests: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_transform_job(self, **request: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self._client.create_transform_job(**request)
        self.requests.append(request)
        reason = play_transform_job(self.server_url, request)
        if reason is not None:
            from moto.sagemaker.models import sagemaker_backends

            job = sagemaker_backends["123456789012"]["us-east-1"].transform_jobs[
                request["TransformJobName"]
            ]
            job.transform_job_status = "Failed"
            job.failure_reason = reason
        return answer


@pytest.fixture
def played(
    moto_env: dict[str, str], stygig: Server, monkeypatch: pytest.MonkeyPatch
) -> Iterator[_PlayedTransforms]:
    client = _PlayedTransforms(boto3.client("sagemaker"), stygig.url)
    real = sm_api.aws_client
    monkeypatch.setattr(
        sm_api,
        "aws_client",
        lambda service, region=None: client if service == "sagemaker" else real(service),
    )
    yield client


def test_transform_groups_inputs_by_content_type_and_refreshes_all_items(
    played: _PlayedTransforms,
    sample: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    catalog, artifact = sample
    ep = create_async_endpoint("refresh")
    photos = sorted((catalog / "queries").glob("*.jpg"))[:3]
    prefix = f"s3://{BUCKET}/transform-in/"
    for photo in photos:
        storage.write_bytes(prefix + "photos/" + photo.name, photo.read_bytes())
    from PIL import Image

    png = catalog / "look.png"
    Image.open(photos[0]).save(png)
    storage.write_bytes(prefix + "look.png", png.read_bytes())
    storage.write_bytes(
        prefix + "ask.json", json.dumps({"item_ids": ["sku-0003"], "k": 1}).encode()
    )
    storage.write_bytes(prefix + "notes.txt", b"not an input")
    out = f"s3://{BUCKET}/transform-out/"
    argv = ["deploy", "transform", "--endpoint-name", ep.name, "--input", prefix,
            "--output", out, "--poll", "0.05", "--job-name", "nightly"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    # One job per content type, each with its manifest, on the endpoint's model.
    jobs = {r["TransformJobName"]: r for r in played.requests}
    assert set(jobs) == {"nightly-jpeg", "nightly-png", "nightly-json"}
    assert {j["TransformInput"]["ContentType"] for j in jobs.values()} == {
        "image/jpeg",
        "image/png",
        "application/json",
    }
    assert all(j["ModelName"] == ep.name for j in jobs.values())
    assert jobs["nightly-jpeg"]["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"] == (
        "ManifestFile"
    )
    assert "left out 1 file(s)" in text and "nightly-jpeg: Completed; outputs 3 of 3" in text
    answer = json.loads(storage.read_bytes(out + "ask.json.out"))
    assert answer["query"][0]["source"] == "item:sku-0003"
    assert json.loads(storage.read_bytes(out + "look.png.out"))["outfit"]["slots"]

    # The nightly refresh: one request line per item of the artifact, answered line for line.
    refresh_out = f"s3://{BUCKET}/refresh-out/"
    assert main(["deploy", "transform", "--model-name", ep.name, "--all-items", "--artifact",
                 str(artifact), "--option", "k=1", "--input", f"s3://{BUCKET}/refresh-in/",
                 "--output", refresh_out, "--poll", "0.05"]) == 0  # fmt: skip
    request = played.requests[-1]
    assert request["TransformInput"]["SplitType"] == "Line"
    assert request["TransformOutput"]["AssembleWith"] == "Line"
    lines = storage.read_bytes(refresh_out + "all-items.jsonl.out").splitlines()
    items = [
        json.loads(x)
        for x in storage.read_bytes(f"s3://{BUCKET}/refresh-in/all-items.jsonl").splitlines()
    ]
    assert len(lines) == len(items) > 10
    assert json.loads(lines[5])["query"][0]["source"] == f"item:{items[5]['item_ids'][0]}"

    # Review, session 53: a JSON Lines type named went as whole files, one 400 each.
    asks = f"s3://{BUCKET}/jsonl-in/"
    rows = [json.dumps({"item_ids": [i], "k": 1}) for i in ("sku-0003", "sku-0004")]
    storage.write_bytes(asks + "asks.jsonl", ("\n".join(rows) + "\n").encode())
    assert main(["deploy", "transform", "--endpoint-name", ep.name, "--input", asks,
                 "--output", f"s3://{BUCKET}/jsonl-out/", "--poll", "0.05",
                 "--content-type", "application/jsonlines"]) == 0  # fmt: skip
    request = played.requests[-1]["TransformInput"]
    assert (request["ContentType"], request["SplitType"]) == ("application/jsonlines", "Line")
    answers = storage.read_bytes(f"s3://{BUCKET}/jsonl-out/asks.jsonl.out").splitlines()
    assert [json.loads(a)["query"][0]["source"] for a in answers] == [
        "item:sku-0003",
        "item:sku-0004",
    ]


def test_transform_failures_and_mistakes(
    played: _PlayedTransforms,
    sample: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    catalog = sample[0]
    ep = create_async_endpoint("broken")
    prefix = f"s3://{BUCKET}/torn-in/"
    photo = (catalog / "queries" / "blue-jeans.jpg").read_bytes()
    storage.write_bytes(prefix + "a.jpg", photo)
    storage.write_bytes(prefix + "b.jpg", photo[:300])
    out = f"s3://{BUCKET}/torn-out/"
    base = ["deploy", "transform", "--input", prefix, "--output", out, "--poll", "0.05"]
    # One refused record fails the job: exit 1 with SageMaker's reason.
    assert main([*base, "--endpoint-name", ep.name, "--content-type", "image/jpeg"]) == 1
    text = capsys.readouterr().out
    assert "Failed" in text and "reason: ClientError: 400 for b.jpg" in text
    assert played.requests[-1]["TransformInput"]["DataSource"]["S3DataSource"] == {
        "S3DataType": "S3Prefix",
        "S3Uri": prefix,
    }
    cases = [
        (base, "--endpoint-name"),
        ([*base, "--endpoint-name", ep.name, "--model-name", "m"], "--endpoint-name"),
        (
            ["deploy", "transform", "--model-name", ep.name, "--input", "/tmp/in", "--output", out],
            "s3://",
        ),
        ([*base, "--model-name", "ghost"], "ghost"),
        ([*base, "--model-name", ep.name, "--all-items"], "--artifact"),
        ([*base, "--model-name", ep.name, "--input", f"s3://{BUCKET}/empty/"], "no inputs"),
        ([*base, "--model-name", ep.name, "--env", "NOEQUALS"], "KEY=VALUE"),
        # checked as deploy's (a key the container cannot take; a repeat): the first version
        # took any key and echoed the value, which may be a secret
        ([*base, "--model-name", ep.name, "--env", "1BAD=secret-value"], "KEY=VALUE"),
        ([*base, "--model-name", ep.name, "--env", "A=1", "--env", "A=2"], "given twice"),
        ([*base, "--model-name", ep.name, "--max-concurrent", "32"], "at most 100"),
        # Review, session 53: a token the endpoint cannot be sent.
        (
            [*base, "--model-name", ep.name, "--env", "STYGIG_AUTH_TOKEN=" + "x" * 20],
            "bearer token",
        ),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)
        assert "secret-value" not in err
    # Review, session 53: plain floats (0 polled in a tight loop, -1 was a traceback after the
    # job was made, nan never timed out): refused as the flags are read.
    for flag, value in (("--poll", "0"), ("--poll", "-1"), ("--timeout", "nan")):
        with pytest.raises(SystemExit) as stop:
            main([*base, "--model-name", ep.name, flag, value])
        assert stop.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
