"""Storage, batch output and async jobs against an S3-compatible server on localhost.

No cloud is reachable here: the S3 (and SNS/SQS) side runs against moto's server mode, started
as a subprocess on a free port and reached over the real S3 HTTP protocol through boto3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stygig import storage
from stygig.batch import run_batch
from stygig.engine import Recommender
from stygig.errors import BatchError, InvalidOptionsError, NotFoundError, PayloadTooLargeError
from stygig.jobs import Notifier
from stygig.locations import InputLocations
from tests.integration.server_fixtures import free_port
from tests.integration.test_jobs import async_server, job_status, wait_for

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server on a free port; the environment that points boto3 at it."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    env = {**_AWS_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(env["AWS_ENDPOINT_URL"], timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "moto server exited"
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        os.environ.update(env)
        storage._clients.clear()  # a fresh client reads the new environment
        boto3.client("s3").create_bucket(Bucket="shop")
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        storage._clients.clear()
        process.terminate()
        process.wait(10)


def test_read_write_list_delete(s3_env: dict[str, str], tmp_path: Path) -> None:
    uri = "s3://shop/a/b.json"
    assert not storage.exists(uri)
    storage.write_bytes(uri, b'{"x": 1}', content_type="application/json")
    assert storage.exists(uri) and storage.read_bytes(uri) == b'{"x": 1}'
    storage.write_bytes("s3://shop/a/c.json", b"2")
    assert storage.list_keys("s3://shop/a/") == ["s3://shop/a/b.json", "s3://shop/a/c.json"]
    storage.delete(uri)
    with pytest.raises(NotFoundError):
        storage.read_bytes(uri)
    with pytest.raises(NotFoundError):
        storage.read_bytes("s3://no-such-bucket/x")
    local = tmp_path / "d" / "f.bin"
    storage.write_bytes(local.as_uri(), b"abc")
    assert storage.read_bytes(str(local)) == b"abc" and storage.list_keys(tmp_path) == [str(local)]


def test_keys_with_query_or_fragment_characters_name_their_own_objects(
    s3_env: dict[str, str],
) -> None:
    """``?`` and ``#`` are characters of an S3 key: ``red.jpg?v=2.jpg`` was read as the object
    ``red.jpg`` (another photo, answered for it in a batch run), ``look#1.jpg`` as ``look``
    (review, session 54)."""
    for key, body in (("odd/red.jpg", b"plain"), ("odd/red.jpg?v=2.jpg", b"versioned")):
        storage.write_bytes(f"s3://shop/{key}", body)
    storage.write_bytes("s3://shop/odd/look#1.jpg", b"hash")
    listed = storage.list_keys("s3://shop/odd/")
    assert listed == [
        "s3://shop/odd/look#1.jpg",
        "s3://shop/odd/red.jpg",
        "s3://shop/odd/red.jpg?v=2.jpg",
    ]
    assert [storage.read_bytes(uri) for uri in listed] == [b"hash", b"plain", b"versioned"]
    assert storage.parse("s3://shop/odd/red.jpg?v=2.jpg").key == "odd/red.jpg?v=2.jpg"
    # A key with a leading "/" is another object than the one without it.
    storage.write_bytes("s3://shop//odd/red.jpg", b"slashed")
    assert storage.read_bytes("s3://shop//odd/red.jpg") == b"slashed"
    assert storage.read_bytes("s3://shop/odd/red.jpg") == b"plain"
    storage.delete("s3://shop//odd/red.jpg")
    # A client-chosen location with them stays refused: some tools read them as a query.
    policy = InputLocations(["s3://shop/odd"], max_bytes=100)
    for refused in [*listed[::2], "s3://shop/odd/red\n.jpg", "s3://shop/odd/red\t.jpg"]:
        with pytest.raises(InvalidOptionsError):
            policy.read(refused)
    assert policy.read("s3://shop/odd/red.jpg") == b"plain"


def test_an_s3_prefix_is_a_folder_for_batch_runs(s3_env: dict[str, str]) -> None:
    """Holes: ``s3://b/recs/shard1`` also listed ``recs/shard10/...`` (a run refused as
    existing, another run's parts counted as done and deleted by --overwrite); --overwrite on
    a prefix deleted everything under it, input photos included; a relative photo in a
    manifest in S3 was read from the local disk of the machine running the batch."""
    from stygig.batch import _manifest_inputs, _remove_output

    for key in ("recs/shard1/part-000000000-000000010.jsonl", "recs/shard10/_batch.json"):
        storage.write_bytes(f"s3://shop/{key}", b"{}")
    assert storage.list_keys("s3://shop/recs/shard1") == [
        "s3://shop/recs/shard1/part-000000000-000000010.jsonl"
    ]
    assert len(storage.list_keys("s3://shop/recs/shard1", folder=False)) == 2
    for name in ("part-000000010-000000020.jsonl", "_batch.json", "photo.jpg", "notes.txt"):
        storage.write_bytes(f"s3://shop/mixed/{name}", b"{}")
    _remove_output("s3://shop/mixed")
    assert storage.list_keys("s3://shop/mixed") == [
        "s3://shop/mixed/notes.txt",
        "s3://shop/mixed/photo.jpg",
    ]
    assert storage.list_keys("s3://shop/recs/shard10") == ["s3://shop/recs/shard10/_batch.json"]
    lines = [{"image": "a.jpg"}, {"image": "s3://other/b.jpg"}, {"image": "/etc/passwd"}]
    lines.append({"image": "file:///etc/passwd"})
    storage.write_bytes(
        "s3://shop/m/manifest.jsonl", "\n".join(json.dumps(x) for x in lines).encode()
    )
    inputs = list(_manifest_inputs("s3://shop/m/manifest.jsonl"))
    assert inputs[0].images == ("s3://shop/m/a.jpg",)
    assert inputs[1].images == ("s3://other/b.jpg",)
    assert [i.error.code for i in inputs[2:]] == ["invalid_location"] * 2  # type: ignore[union-attr]


def test_lines_are_streamed_and_end_at_newlines_only(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    """A remote batch manifest was read whole (a 100 MB one peaked at 425 MB) and split at
    U+2028 inside its JSON strings."""
    from stygig.batch import _manifest_lines

    lines = [json.dumps({"id": n, "name": "a\u2028b"}, ensure_ascii=False) for n in range(5000)]
    data = ("\r\n".join(lines[:10]) + "\n" + "\n".join(lines[10:]) + "\n").encode()
    storage.write_bytes("s3://shop/manifest.jsonl", data)
    (tmp_path / "manifest.jsonl").write_bytes(data)
    for where in ("s3://shop/manifest.jsonl", str(tmp_path / "manifest.jsonl")):
        got = [line.decode() for line in storage.iter_lines(where)]
        assert got == lines, where
        assert [line for line in _manifest_lines(where) if line] == lines, where
    with pytest.raises(NotFoundError):
        list(storage.iter_lines("s3://shop/nothing.jsonl"))


def test_batch_to_s3_prefix_resumes_by_part(
    s3_env: dict[str, str], sample: tuple[Path, Path]
) -> None:
    rec = Recommender.from_path(sample[1])
    n = len(rec.artifact.items)
    dst = "s3://shop/recs/nightly/"
    first = run_batch(rec, str(sample[1]), dst, part_size=50, progress=False)
    parts = [k for k in storage.list_keys(dst) if "/part-" in k]
    assert first.processed == n and len(parts) == -(-n // 50)
    storage.delete(parts[1])  # as if the run had died before writing this part
    side = storage.join(dst, "_batch.json")
    state = json.loads(storage.read_bytes(side))
    storage.write_bytes(side, json.dumps({**state, "complete": False}).encode())
    again = run_batch(rec, str(sample[1]), dst, part_size=50, progress=False)
    assert again.processed == 50 and again.skipped == n - 50
    lines = [
        json.loads(line)
        for k in storage.list_keys(dst)
        if "/part-" in k
        for line in storage.read_bytes(k).splitlines()
    ]
    assert sorted(r["index"] for r in lines) == list(range(n))


def test_a_run_on_a_prefix_never_touches_runs_below_it_and_redoes_a_lost_output(
    s3_env: dict[str, str], sample: tuple[Path, Path]
) -> None:
    """Review (s37): --overwrite on s3://b/recs deleted the parts of the runs under
    recs/2026-11-26/ (a recursive listing, judged by base name), a resume counted them as its
    own done work, and a completed run whose parts a lifecycle rule had removed reported
    "already done" and wrote nothing. An input that is not .jsonl was read as a photo prefix:
    0 inputs, exit 0, recorded as complete."""
    from stygig.batch import input_kind, iter_inputs

    rec = Recommender.from_path(sample[1])
    n = len(rec.artifact.items)
    below = "s3://shop/recs/2026-11-26/"
    run_batch(rec, str(sample[1]), below, part_size=50, progress=False)
    theirs = storage.list_keys(below)
    first = run_batch(rec, str(sample[1]), "s3://shop/recs", part_size=50, progress=False)
    assert first.processed == n and first.skipped == 0  # their parts are not its done work
    again = run_batch(
        rec, str(sample[1]), "s3://shop/recs", part_size=50, progress=False, overwrite=True
    )
    assert again.processed == n and storage.list_keys(below) == theirs
    for key in storage.list_keys("s3://shop/recs"):
        if "/recs/part-" in key:
            storage.delete(key)  # a lifecycle rule
    redone = run_batch(rec, str(sample[1]), "s3://shop/recs", part_size=50, progress=False)
    assert redone.processed == n and storage.list_keys(below) == theirs
    storage.write_bytes("s3://shop/in/catalog.CSV", (sample[0] / "catalog.csv").read_bytes())
    storage.write_bytes("s3://shop/in/manifest.JSONL", b'{"item_ids": ["sku-0001"]}\n')
    assert input_kind("s3://shop/in/catalog.CSV") == "catalog"
    assert input_kind("s3://shop/in/manifest.JSONL") == "manifest"
    with pytest.raises(BatchError, match="no photos under"):
        iter_inputs("s3://shop/in/typo", rec)


def test_async_job_with_s3_input_and_output(
    s3_env: dict[str, str], sample: tuple[Path, Path], tmp_path: Path
) -> None:
    catalog, artifact = sample
    storage.write_bytes(
        "s3://shop/in/photo.jpg", (catalog / "queries" / "blue-jeans.jpg").read_bytes()
    )
    with async_server(
        artifact,
        tmp_path,
        "--allow-input-prefix",
        "s3://shop/in/",
        env=s3_env,
        output="s3://shop/async-out/",
    ) as server:
        sub = httpx.post(
            f"{server.url}/async/invocations",
            headers={"X-Amzn-SageMaker-InputLocation": "s3://shop/in/photo.jpg"},
        ).json()
        assert sub["OutputLocation"] == f"s3://shop/async-out/{sub['InferenceId']}.out"
        missing = httpx.post(
            f"{server.url}/async/invocations",
            headers={"X-Amzn-SageMaker-InputLocation": "s3://shop/in/none.jpg"},
        ).json()
        for job_id in (sub["InferenceId"], missing["InferenceId"]):
            wait_for(
                lambda j=job_id: job_status(server.url, j)["Status"] in ("succeeded", "failed")
            )
    result = json.loads(storage.read_bytes(sub["OutputLocation"]))
    assert result["outfit"]["slots"]
    error = json.loads(storage.read_bytes(missing["FailureLocation"]))
    assert error["error"]["code"] == "location_not_found"


def test_bounded_reads_and_the_input_policy(s3_env: dict[str, str]) -> None:
    """S3 inputs named by clients: only under an allowed prefix, never more than the limit."""
    storage.write_bytes("s3://shop/in/small.bin", b"abc")
    storage.write_bytes("s3://shop/in/empty.bin", b"")
    storage.write_bytes("s3://shop/in/big.bin", b"x" * 1000)
    storage.write_bytes("s3://shop/secret/key.bin", b"secret")
    assert storage.read_bytes("s3://shop/in/small.bin", max_bytes=3) == b"abc"
    assert storage.read_bytes("s3://shop/in/empty.bin", max_bytes=3) == b""
    with pytest.raises(PayloadTooLargeError):
        storage.read_bytes("s3://shop/in/big.bin", max_bytes=999)
    policy = InputLocations(["s3://shop/in"], max_bytes=100)
    assert policy.read("s3://shop/in/small.bin") == b"abc"
    with pytest.raises(PayloadTooLargeError) as big:
        policy.read("s3://shop/in/big.bin")
    assert big.value.code == "input_too_large" and "s3://" not in big.value.message
    with pytest.raises(NotFoundError) as missing:
        policy.read("s3://shop/in/none.bin")
    assert "none.bin" not in missing.value.message
    for refused in (
        "s3://shop/secret/key.bin",
        "s3://shop/in/../secret/key.bin",
        "s3://shop/in/./small.bin",
        "s3://shop/in//small.bin",
        "s3://shop/inbox/small.bin",
        "s3://shop/in/small.bin#x",
        "s3://other/in/small.bin",
    ):
        with pytest.raises(InvalidOptionsError) as caught:
            policy.read(refused)
        assert caught.value.code == "location_not_allowed", refused


def test_sns_notification(s3_env: dict[str, str]) -> None:
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="stygig-done")["TopicArn"]
    queue = sqs.create_queue(QueueName="stygig-done")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"])
    event = {"inferenceId": "abc", "status": "succeeded"}
    assert Notifier(success_topic=topic).publish(topic, event)
    messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2).get("Messages", [])
    assert json.loads(json.loads(messages[0]["Body"])["Message"]) == event


def test_catalogue_images_in_s3_build(s3_env: dict[str, str], tmp_path: Path) -> None:
    from stygig.build import build_artifact
    from stygig.encoders import load_encoder
    from stygig.sample_catalog import generate_sample_catalog

    csv_path = generate_sample_catalog(tmp_path / "cat")
    images = sorted((csv_path.parent / "images").glob("*.jpg"))[:6]
    for image in images:
        storage.write_bytes(f"s3://shop/photos/{image.name}", image.read_bytes())
    rows = [f"{p.stem},s3://shop/photos/{p.name},shirt" for p in images]
    rows.append("gone,s3://shop/photos/gone.jpg,shirt")
    (tmp_path / "s3.csv").write_text("id,image,category\n" + "\n".join(rows) + "\n")
    result = build_artifact(
        tmp_path / "s3.csv", tmp_path / "art", load_encoder("tiny"), progress=False
    )
    assert result.items == 6 and result.rejects == {"missing_image": 1}
