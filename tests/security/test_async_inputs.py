"""Async jobs facing hostile clients: which locations the server reads, how much, and what it says.

Two real ``stygig serve`` processes (under the memory cap): one with the defaults (no client
may name any location, no job listing) and one that allows a single input folder; races that
no server run can schedule (a swap between the check and the read) run in-process. Every test
names the hole of the security issue it covers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stygig.engine import Options, Query
from stygig.jobs import JobSpec, JobStore, run_job
from stygig.jobs.store import new_owner
from stygig.jobs.worker import Outcome
from stygig.locations import InputLocations
from tests.integration.server_fixtures import Server
from tests.integration.test_jobs import db_counts, job_status, wait_for
from tests.security.conftest import capped_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def closed(
    sample: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    """A server with the defaults, and its folder (jobs.db, out/)."""
    root = tmp_path_factory.mktemp("closed")
    flags = ("--jobs-db", str(root / "jobs.db"), "--async-output", str(root / "out"))
    with capped_server(sample[1], root / "server.log", *flags) as server:
        yield server, root


@pytest.fixture(scope="module")
def opened(
    sample: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    """A server that lets clients name files in ``<root>/allowed``, and its folder."""
    root = tmp_path_factory.mktemp("opened")
    (root / "allowed").mkdir()
    flags = (
        *("--jobs-db", str(root / "jobs.db"), "--async-output", str(root / "out")),
        *("--allow-input-prefix", str(root / "allowed")),
    )
    with capped_server(sample[1], root / "server.log", *flags) as server:
        yield server, root


def _submit(
    url: str, location: str | None = None, body: Any = None, job_id: str | None = None
) -> httpx.Response:
    headers = {"X-Amzn-SageMaker-InputLocation": location} if location else {}
    if job_id:
        headers["X-Amzn-SageMaker-Inference-Id"] = job_id
    content = b""
    if body is not None:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "image/jpeg" if isinstance(body, bytes) else "application/json"
    return httpx.post(f"{url}/async/invocations", content=content, headers=headers, timeout=30)


def _finished(url: str, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    done: dict[str, Any] = wait_for(
        lambda: (info := job_status(url, job_id))["Status"] in ("succeeded", "failed") and info,
        timeout,
    )
    return done


def test_client_chosen_locations_are_refused_alike(closed: tuple[Server, Path]) -> None:
    """Item 2: InputLocation was only scheme-checked, so any client made the server read its own
    files (``/etc/passwd``, ``../``), devices, FIFOs and any S3 bucket with its credentials; an
    http scheme was a 500; ``location_not_found`` vs ``not_an_image`` told which files exist.
    Now every one is refused at submission, with one code and one message that echoes nothing."""
    server, root = closed
    fifo = root / "fifo"
    os.mkfifo(fifo)
    (root / "link").symlink_to("/etc/passwd")
    refused = [
        "/etc/passwd",
        "file:///etc/passwd",
        f"{root}/out/../../../../../etc/passwd",
        "/dev/zero",
        str(fifo),
        str(root / "link"),
        "/no/such/file.jpg",
        "s3://someone-elses-bucket/private/key.json",
        "http://127.0.0.1:1/photo.jpg",
    ]
    before = db_counts(root / "jobs.db")
    answers = [_submit(server.url, location) for location in refused]
    answers.append(_submit(server.url, body={"image_uri": "/etc/passwd"}))
    for location, answer in zip(refused, answers, strict=False):
        assert answer.status_code == 422, (location, answer.text)
        assert answer.json()["error"]["code"] == "location_not_allowed"
        assert location not in answer.text and "passwd" not in answer.text
    assert len({a.text for a in answers}) == 1  # existing or not, file or device: one answer
    assert db_counts(root / "jobs.db") == before  # nothing was queued


def test_listing_is_off_and_bad_paging_is_a_4xx(closed: tuple[Server, Path]) -> None:
    """Item 4: anyone could list every job (ids, input locations, results); item 8:
    ``after=10**30`` was a 500."""
    server, _ = closed
    listing = httpx.get(f"{server.url}/async/jobs", timeout=10)
    assert listing.status_code == 404
    for query in (f"after={10**30}", "after=-1", "limit=0", "limit=100000"):
        answer = httpx.get(f"{server.url}/async/jobs?{query}", timeout=10)
        assert 400 <= answer.status_code < 500, (query, answer.status_code)


def test_an_id_that_names_another_jobs_failure_is_refused(closed: tuple[Server, Path]) -> None:
    """Item 7: job ``X-error``'s result was written where job ``X``'s failure goes, so ``X``
    was never run and its output was the other job's document."""
    server, _ = closed
    for job_id in ("look-error", "look-ERROR"):
        answer = _submit(server.url, body={"item_ids": ["sku-0001"]}, job_id=job_id)
        assert answer.status_code == 422, answer.text
        assert job_id not in answer.text


def test_a_found_result_must_be_this_jobs(closed: tuple[Server, Path]) -> None:
    """Item 7: a document already at a job's output location (another job's, a forged one, one
    left from a forgotten job of the same id) was taken as the job's result without running it.
    Now only a document carrying this job's token counts."""
    server, root = closed
    (root / "out").mkdir(exist_ok=True)
    forged = {"outfit": "forged", "InferenceId": "look", "JobToken": "guessed"}
    (root / "out" / "look.out").write_text(json.dumps(forged), encoding="utf-8")
    assert _submit(server.url, body={"item_ids": ["sku-0001"]}, job_id="look").status_code == 202
    assert _finished(server.url, "look")["Status"] == "succeeded"
    output = httpx.get(f"{server.url}/async/jobs/look/output", timeout=10).json()
    assert output["outfit"] != "forged" and output["query"][0]["source"] == "item:sku-0001"
    assert output["JobToken"] != "guessed"


def test_storage_errors_do_not_leak_paths(closed: tuple[Server, Path]) -> None:
    """Item 13: a storage failure answered a 500 carrying the server path and errno text."""
    server, root = closed
    assert _submit(server.url, body={"item_ids": ["sku-0002"]}, job_id="gone").status_code == 202
    assert _finished(server.url, "gone")["Status"] == "succeeded"
    result = root / "out" / "gone.out"
    result.unlink()
    result.mkdir()  # reading it now fails with EISDIR
    answer = httpx.get(f"{server.url}/async/jobs/gone/output", timeout=10)
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "storage_error"
    assert str(root) not in answer.text and "directory" not in answer.text.lower()


def test_allowed_inputs_are_read_bounded_and_views_hide_them(
    opened: tuple[Server, Path], sample: tuple[Path, Path]
) -> None:
    """Items 2, 3, 4: an allowed file is read; a symlink or ``..`` out of the allowed folder is
    refused; a huge file fails its job without being read (it was read whole: /dev/zero read
    3.1 GB in 4 s); a FIFO fails at once instead of blocking the worker forever, and the next
    job runs; job views never show the input location; failures never echo it."""
    server, root = opened
    allowed = root / "allowed"
    (allowed / "photo.jpg").write_bytes((sample[0] / "queries" / "blue-jeans.jpg").read_bytes())
    with (allowed / "huge.jpg").open("wb") as f:
        f.truncate(8 * 1024**3)  # sparse: takes no disk, but 8 GB to whoever reads it all
    os.mkfifo(allowed / "fifo")
    (allowed / "escape").symlink_to("/etc/passwd")

    for location in (str(allowed / "escape"), f"{allowed}/../jobs.db", f"{allowed}/../../"):
        answer = _submit(server.url, location)
        assert (
            answer.status_code == 422 and answer.json()["error"]["code"] == "location_not_allowed"
        )

    ids = {}
    for name in ("fifo", "huge.jpg", "missing.jpg", "photo.jpg"):
        answer = _submit(server.url, str(allowed / name))
        assert answer.status_code == 202, answer.text
        ids[name] = answer.json()["InferenceId"]
    outcomes = {name: _finished(server.url, job_id) for name, job_id in ids.items()}
    assert outcomes["fifo"]["Error"]["code"] == "not_a_regular_file"
    assert outcomes["huge.jpg"]["Error"]["code"] == "input_too_large"
    assert outcomes["missing.jpg"]["Error"]["code"] == "location_not_found"
    assert outcomes["photo.jpg"]["Status"] == "succeeded"  # after the FIFO: the queue went on
    for name, info in outcomes.items():
        text = json.dumps(info) + httpx.get(f"{server.url}/async/jobs/{ids[name]}").text
        assert "InputLocation" not in text and str(allowed) not in text, name
        if info["Status"] == "failed":
            failure = httpx.get(f"{server.url}/async/jobs/{ids[name]}/output", timeout=10).text
            assert str(allowed) not in failure and name not in failure
    assert server.process.poll() is None


def test_parts_are_counted_before_any_location_is_read(opened: tuple[Server, Path]) -> None:
    """Item 3: a 4.6 KB body with 100 ``image_uris`` read 1.3 GB before the 8-part limit was
    checked. Now an inline body is refused at submission, and a stored one fails its job on the
    count before any of its locations is opened (here they name a FIFO)."""
    server, root = opened
    allowed = root / "allowed"
    if not (allowed / "fifo").exists():
        os.mkfifo(allowed / "fifo")
    request = {"image_uris": [str(allowed / "fifo")] * 100}
    inline = _submit(server.url, body=request)
    assert inline.status_code == 422 and "at most 8" in inline.json()["error"]["message"]
    (allowed / "many.json").write_text(json.dumps(request), encoding="utf-8")
    stored = _submit(server.url, str(allowed / "many.json"))
    assert stored.status_code == 202
    error = _finished(server.url, stored.json()["InferenceId"])["Error"]
    assert error["code"] == "invalid_options" and "at most 8" in error["message"]


def test_paths_outside_the_allowed_folder_are_refused_alike(opened: tuple[Server, Path]) -> None:
    """Review item 7: ``os.path.realpath`` ran on the client's path, so ``<x>/outlink/../in/a``
    (``outlink`` a symlink) was a 422 while ``<x>/outdir/../in/a`` (a folder) was a 202: the
    answer told which paths outside the allowed folder are symlinks. Now a path with ``..``,
    ``.`` or empty segments, or not written under the folder, is refused on its text alone:
    existing or missing, file, folder or symlink outside, one answer."""
    server, root = opened
    allowed = root / "allowed"
    (allowed / "seven.jpg").write_bytes(b"\xff\xd8 not really a photo")
    (root / "outdir").mkdir()
    (root / "outlink").symlink_to("/etc")
    (root / "secret.txt").write_text("secret", encoding="utf-8")
    (root / "allowed-too").mkdir()
    (root / "allowed-too" / "seven.jpg").write_bytes(b"\xff\xd8")
    accepted = _submit(server.url, str(allowed / "seven.jpg"))
    assert accepted.status_code == 202, accepted.text  # the folder is really allowed
    refused = [
        f"{root}/outdir/../allowed/seven.jpg",  # a folder outside, then back in
        f"{root}/outlink/../allowed/seven.jpg",  # a symlink outside, then "back in"
        f"file://{root}/outdir/%2e%2e/allowed/seven.jpg",
        f"{allowed}/../allowed/seven.jpg",
        f"{allowed}/./seven.jpg",
        f"{allowed}//seven.jpg",
        str(root / "secret.txt"),  # exists outside
        str(root / "missing.txt"),  # does not
        str(root / "outlink" / "passwd"),
        str(root / "outdir"),
        str(root / "allowed-too" / "seven.jpg"),  # a name that only starts like the folder
        "allowed/seven.jpg",
    ]
    answers = [_submit(server.url, location) for location in refused]
    for location, answer in zip(refused, answers, strict=True):
        assert answer.status_code == 422, (location, answer.text)
        assert answer.json()["error"]["code"] == "location_not_allowed"
        assert str(root) not in answer.text
    assert len({a.text for a in answers}) == 1


class _Stub:
    """Stands in for the recommender: records the photos it was given, or raises."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.images: list[object] = []

    def recommend(self, query: Query, options: Options) -> Any:
        if self.error is not None:
            raise self.error
        self.images.extend(query.images)

        class _Answer:
            def to_json(self) -> bytes:
                return b'{"outfit":null}'

        return _Answer()


def _run(tmp_path: Path, body: bytes, recommender: _Stub, policy: InputLocations) -> Outcome:
    with JobStore(tmp_path / "jobs.db", synchronous="NORMAL") as store:
        store.submit(
            JobSpec(
                str(tmp_path / "out" / "{id}.out"),
                str(tmp_path / "out" / "{id}-error.out"),
                input_body=body,
                content_type="application/json",
            )
        )
        (job,) = store.claim(new_owner())
    return run_job(job, recommender, locations=policy)  # type: ignore[arg-type]


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review item 8: the location was checked (resolved), then opened by path, following
    symlinks; whoever can write in the allowed folder could swap a folder on the path for a
    symlink in between and make the server read any file it can. Here the swap happens right
    after the path was resolved; the read now walks the resolved path without following
    symlinks and refuses it."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    (allowed / "sub" / "photo.jpg").write_bytes(b"the photo")
    (outside / "photo.jpg").write_bytes(b"the server's secret")
    resolve = os.path.realpath

    def resolve_then_swap(path: Any, *args: Any, **kwargs: Any) -> str:
        resolved = str(resolve(path, *args, **kwargs))
        if (allowed / "sub").is_dir() and not (allowed / "sub").is_symlink():
            (allowed / "sub").rename(tmp_path / "moved")
            (allowed / "sub").symlink_to(outside)
        return resolved

    policy = InputLocations([str(allowed)])
    monkeypatch.setattr("stygig.locations.os.path.realpath", resolve_then_swap)
    stub = _Stub()
    body = json.dumps({"image_uri": str(allowed / "sub" / "photo.jpg")}).encode()
    status, error = _run(tmp_path, body, stub, policy)
    assert (allowed / "sub").is_symlink()  # the swap did happen between check and read
    assert stub.images == []  # the secret never reached the recommender
    assert status == "failed" and error is not None
    assert error["code"] == "location_changed" and str(tmp_path) not in error["message"]


def test_an_unexpected_failure_is_a_neutral_job_failure(tmp_path: Path) -> None:
    """Review: an unexpected exception while running a job (a library's, a bug) failed it
    with ``invalid_image``, blaming the client's input. Now it is ``job_failed``, and the
    message says nothing of the exception (its text can hold server paths)."""
    stub = _Stub(RuntimeError(f"cannot open {tmp_path}/model.onnx"))
    body = json.dumps({"item_ids": ["sku-0001"]}).encode()
    status, error = _run(tmp_path, body, stub, InputLocations())
    assert status == "failed" and error is not None
    assert error["code"] == "job_failed"
    assert str(tmp_path) not in error["message"] and "model.onnx" not in error["message"]
