"""``stygig jobs --endpoint-name`` and ``stygig batch --endpoint-name`` against a SageMaker
asynchronous endpoint played by moto and a real StyGig server.

S3, SNS, SQS and SageMaker's control plane run in moto's server mode (``ThreadedMotoServer`` on
127.0.0.1, reached over HTTP through boto3). moto has no real ``InvokeEndpointAsync``: the
runtime client is wrapped so that the call does what SageMaker does (:class:`FakeAsyncRuntime`):
answer at once with the inference id and the output and failure locations the endpoint config
implies, then in the background read the input from S3, POST it to the StyGig server's
``/invocations`` with the content type and custom attributes, write the answer to the output
(or failure) location and publish the success (or error) notification.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from stygig import storage
from stygig.batch import run_batch
from stygig.cli import main
from stygig.deploy import sagemaker as sm_api
from stygig.engine import Recommender
from stygig.jobs.sagemaker_async import MAX_RESULT_BYTES, AsyncEndpoint, AsyncInvocation
from tests.integration.server_fixtures import Server, free_port, running_server
from tests.integration.test_jobs import wait_for

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:botocore.*"),
]

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/stygig"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/stygig:cpu"
BUCKET = "shop"
PREFIX = f"s3://{BUCKET}/async-in/"
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@pytest.fixture(scope="module")
def moto_env() -> Iterator[dict[str, str]]:
    """moto's server on a free localhost port; the environment pointing boto3 at it."""
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    env = {**_AWS_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE", "STYGIG_ASYNC_INPUT_PREFIX"]}
    try:
        os.environ.update(env)
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("STYGIG_ASYNC_INPUT_PREFIX", None)
        storage._clients.clear()  # a fresh client reads the new environment
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        storage._clients.clear()
        server.stop()


@pytest.fixture(scope="module")
def stygig(sample: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The container's server: a real ``stygig serve`` on the sample artifact."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(sample[1], log) as server:
        yield server


@dataclass
class Endpoint:
    """An async endpoint in moto: its name, result paths and topics."""

    name: str
    output: str
    failure: str
    success_topic: str
    error_topic: str


def create_async_endpoint(name: str) -> Endpoint:
    """Model, async endpoint config (output, failure, SNS topics) and endpoint, in moto."""
    sm, sns = boto3.client("sagemaker"), boto3.client("sns")
    ok = sns.create_topic(Name=f"{name}-ok")["TopicArn"]
    bad = sns.create_topic(Name=f"{name}-failed")["TopicArn"]
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"},
    )
    output, failure = f"s3://{BUCKET}/{name}/out", f"s3://{BUCKET}/{name}/failed"
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "v1",
                "ModelName": name,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
            }
        ],
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": output,
                "S3FailurePath": failure,
                "NotificationConfig": {"SuccessTopic": ok, "ErrorTopic": bad},
            }
        },
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return Endpoint(name, output, failure, ok, bad)


@dataclass
class FakeAsyncRuntime:
    """``sagemaker-runtime`` with an ``InvokeEndpointAsync`` that does SageMaker's work."""

    server_url: str
    workers: int = 2
    calls: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    fail_after: int | None = None  # refuse calls after this many (an AWS outage)
    hold_from: int | None = None  # jobs from this call on wait for ``release``
    release: threading.Event = field(default_factory=threading.Event)
    held: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor | None = None

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fake-sagemaker")

    def close(self) -> None:
        """Finish the jobs in hand."""
        assert self._pool is not None
        self.release.set()
        self._pool.shutdown(wait=True)

    def idle(self) -> bool:
        """No job in hand."""
        with self._lock:
            return self.in_flight == 0

    def invoke_endpoint_async(self, **kw: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        with self._lock:
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                error = {"Error": {"Code": "ServiceUnavailable", "Message": "try later"}}
                raise ClientError(error, "InvokeEndpointAsync")
            self.calls.append(kw)
            hold = self.hold_from is not None and len(self.calls) > self.hold_from
            self.held += hold
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        sm = boto3.client("sagemaker")
        config_name = sm.describe_endpoint(EndpointName=kw["EndpointName"])["EndpointConfigName"]
        config = sm.describe_endpoint_config(EndpointConfigName=config_name)
        out = config["AsyncInferenceConfig"]["OutputConfig"]
        name = uuid.uuid4().hex
        job = {
            "InferenceId": kw.get("InferenceId") or name,
            "OutputLocation": f"{out['S3OutputPath']}/{name}.out",
            "FailureLocation": f"{out['S3FailurePath']}/{name}-error.out",
        }
        assert self._pool is not None
        self._pool.submit(self._run, kw, job, out.get("NotificationConfig", {}), hold)
        return job

    def _run(
        self, kw: dict[str, Any], job: dict[str, str], topics: dict[str, str], hold: bool
    ) -> None:
        try:
            if hold:
                self.release.wait(60)
            body = storage.read_bytes(kw["InputLocation"])
            headers = {"Content-Type": kw["ContentType"]}
            if kw.get("CustomAttributes"):
                headers["X-Amzn-SageMaker-Custom-Attributes"] = kw["CustomAttributes"]
            answer = httpx.post(
                f"{self.server_url}/invocations", content=body, headers=headers, timeout=60
            )
        finally:
            # Counted out before its result can be seen: a client that submits once it sees
            # a result never finds this job still counted.
            with self._lock:
                self.in_flight -= 1
        ok = answer.status_code == 200
        where = job["OutputLocation"] if ok else job["FailureLocation"]
        storage.write_bytes(where, answer.content)
        note = {
            "eventSource": "aws:sagemaker",
            "eventName": "InferenceResult",
            "inferenceId": job["InferenceId"],
            "invocationStatus": "Completed" if ok else "Failed",
            "requestParameters": {
                "endpointName": kw["EndpointName"],
                "inputLocation": kw["InputLocation"],
                "contentType": kw["ContentType"],
            },
            "responseParameters": {"outputLocation": job["OutputLocation"]},
        }
        topic = topics.get("SuccessTopic" if ok else "ErrorTopic")
        if topic:
            boto3.client("sns").publish(TopicArn=topic, Message=json.dumps(note))


@pytest.fixture
def runtime(
    moto_env: dict[str, str], stygig: Server, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeAsyncRuntime]:
    """Every ``sagemaker-runtime`` client the CLI makes is the fake one."""
    fake = FakeAsyncRuntime(stygig.url)
    real = sm_api.aws_client
    monkeypatch.setattr(
        sm_api,
        "aws_client",
        lambda service, region=None: fake if service == "sagemaker-runtime" else real(service),
    )
    try:
        yield fake
    finally:
        fake.close()


def _s3_json(uri: str) -> Any:
    return json.loads(storage.read_bytes(uri))


def _out(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


def test_submit_wait_and_status_through_s3_and_sns(
    runtime: FakeAsyncRuntime,
    sample: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    catalog = sample[0]
    ep = create_async_endpoint("looks")
    where = ["--endpoint-name", ep.name, "--input-prefix", PREFIX]
    flags = [*where, "--interval", "0.05"]
    photo = catalog / "queries" / "blue-jeans.jpg"

    # A photo: uploaded, submitted as image/jpeg with its options, waited for.
    code = main(["jobs", "submit", *flags, str(photo), "--option", "k=2", "--wait"])
    shown = json.loads(_out(capsys))
    assert code == 0 and shown["Status"] == "succeeded"
    assert set(shown) >= {"InferenceId", "OutputLocation", "FailureLocation", "InputLocation"}
    assert runtime.calls[-1]["ContentType"] == "image/jpeg"
    assert runtime.calls[-1]["CustomAttributes"] == "k=2"
    assert shown["InputLocation"].startswith(PREFIX) and storage.exists(shown["InputLocation"])
    result = _s3_json(shown["OutputLocation"])
    assert result["outfit"]["slots"] and all(len(v) <= 2 for v in result["by_category"].values())

    # Point 8: a stored JSON request (this one starts with a byte-order mark) goes out as
    # application/json, not as a photo; the wait is woken by SNS through a queue made for it.
    stored = f"s3://{BUCKET}/requests/look.json"
    request = json.dumps({"item_ids": ["sku-0014"], "k": 2}).encode()
    storage.write_bytes(stored, b"\xef\xbb\xbf" + request)
    assert main(["jobs", "submit", *flags, "--input-location", stored, "--id", "look-42"]) == 0
    submitted = json.loads(_out(capsys))
    assert submitted["InferenceId"] == "look-42" and submitted["InputLocation"] == stored
    assert runtime.calls[-1]["ContentType"] == "application/json"
    topics = ["--sns-topic", ep.success_topic, "--sns-topic", ep.error_topic]
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    # Other tests' queues on the shared moto server (test_sqs_jobs.py run first) are not ours.
    queues = set(sqs.list_queues().get("QueueUrls", []))
    subscriptions = len(sns.list_subscriptions()["Subscriptions"])
    assert main(["jobs", "wait", *flags, *topics, "--max-interval", "1", "look-42"]) == 0
    line = json.loads(_out(capsys))
    assert line["Status"] == "succeeded"
    assert _s3_json(line["OutputLocation"])["query"][0]["source"] == "item:sku-0014"
    assert set(sqs.list_queues().get("QueueUrls", [])) == queues  # the wait's queue is gone,
    assert len(sns.list_subscriptions()["Subscriptions"]) == subscriptions  # its subscriptions too

    # A corrupt photo: the failure location holds the server's error; wait exits 1.
    corrupt = tmp_path / "torn.jpg"
    corrupt.write_bytes(photo.read_bytes()[:300])
    assert main(["jobs", "submit", *flags, str(corrupt)]) == 0
    torn = json.loads(_out(capsys))["InferenceId"]
    assert main(["jobs", "wait", *flags, torn]) == 1
    failed = json.loads(_out(capsys))
    assert failed["Status"] == "failed"
    assert failed["Error"]["code"] in ("invalid_image", "not_an_image", "corrupt_image")

    # An existing queue subscribed to both topics, and status by id or by output location.
    queue = sqs.create_queue(QueueName="shop-notices")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    for topic in (ep.success_topic, ep.error_topic):
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"])
    assert main(["jobs", "submit", *flags, "--item", "sku-0001", "--option", "k=1"]) == 0
    item_job = json.loads(_out(capsys))
    assert runtime.calls[-1]["ContentType"] == "application/json"
    wait = ["jobs", "wait", *flags, "--sns-queue-url", queue, "--max-interval", "1"]
    assert main([*wait, item_job["InferenceId"]]) == 0
    assert json.loads(_out(capsys))["Status"] == "succeeded"
    assert (
        main(["jobs", "status", *where, shown["InferenceId"], torn, item_job["OutputLocation"]])
        == 0
    )
    states = [json.loads(x) for x in _out(capsys).splitlines()]
    assert [s["Status"] for s in states] == ["succeeded", "failed", "succeeded"]
    # The output location alone names the job: its failure location follows the endpoint's.
    assert states[2]["FailureLocation"].startswith(ep.failure + "/")


def test_endpoint_mistakes_are_clear_errors(
    runtime: FakeAsyncRuntime,
    sample: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ep = create_async_endpoint("typos")
    photo = str(sample[0] / "queries" / "blue-jeans.jpg")
    base = ["jobs", "submit", "--endpoint-name", ep.name]
    cases = [
        ([*base, photo], "--input-prefix"),  # nowhere to upload to
        ([*base, "--input-prefix", "/tmp/in", photo], "s3://"),
        ([*base, "--input-prefix", PREFIX, "--url", "http://x", photo], "not both"),
        ([*base, "--input-prefix", PREFIX, "--webhook", "http://x/h", photo], "SNS"),
        ([*base, "--input-prefix", PREFIX, "--time-limit", "7200", photo], "3600"),
        (
            [
                "jobs",
                "submit",
                "--endpoint-name",
                ep.name,
                "--input-prefix",
                PREFIX,
                "--input-location",
                f"s3://{BUCKET}/x/blob",
            ],
            "--content-type",
        ),
        (
            ["jobs", "status", "--endpoint-name", ep.name, "--input-prefix", PREFIX, "nope"],
            "no receipt",
        ),
        (["jobs", "list", "--endpoint-name", ep.name], "StyGig server"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)
    # Review, session 49: a FIFO hung for ever and /dev/zero grew the process until the
    # machine ran out of memory; local inputs are read bounded, from regular files only.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for odd in (str(fifo), "/dev/zero"):
        code = main([*base, "--input-prefix", PREFIX, "--content-type", "image/jpeg", odd])
        err = capsys.readouterr().err
        assert code != 0 and "Traceback" not in err, err
        assert "not a regular file" in err, err
    # An endpoint that does not exist: AWS's refusal, translated.
    code = main(["jobs", "status", "--endpoint-name", "ghost", "--input-prefix", PREFIX,
                 f"s3://{BUCKET}/ghost/out/x.out"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "ghost" in err and "Traceback" not in err
    assert not runtime.calls


def test_receipts_and_results_read_back_from_the_bucket_are_checked(
    moto_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What the client reads back from S3 is input like any other: a receipt that is not one
    (not JSON, edited to name a local file or another job) is a clear error or skipped, and an
    output or failure object is read within a bound, never whole."""
    ep = create_async_endpoint("hostile")
    endpoint = AsyncEndpoint(ep.name, input_prefix=PREFIX)
    receipts = f"{PREFIX}receipts"

    def receipt(job: str, **fields: Any) -> dict[str, Any]:
        return {
            "InferenceId": job,
            "EndpointName": ep.name,
            "OutputLocation": f"{ep.output}/{job}.out",
            "FailureLocation": f"{ep.failure}/{job}-error.out",
            **fields,
        }

    good = receipt("run-good")
    storage.write_bytes(f"{receipts}/run-good.json", json.dumps(good).encode())
    storage.write_bytes(f"{receipts}/run-torn.json", b'{"InferenceId": "run-to')
    local = receipt("run-local", OutputLocation="/etc/passwd")
    storage.write_bytes(f"{receipts}/run-local.json", json.dumps(local).encode())
    other = receipt("run-good")  # under another job's name
    storage.write_bytes(f"{receipts}/run-other.json", json.dumps(other).encode())
    storage.write_bytes(f"{receipts}/run-list.json", b"[1, 2]")
    storage.write_bytes(f"{receipts}/run-big.json", b" " * (1 << 20) + json.dumps(good).encode())
    with caplog.at_level(logging.WARNING, logger="stygig.jobs.sagemaker_async"):
        found = endpoint.receipts("run-")
    assert list(found) == ["run-good"]
    skipped = [r.getMessage() for r in caplog.records if "is not a job's receipt" in r.getMessage()]
    assert len(skipped) == 5
    assert not any("root:" in m for m in skipped)  # the local file was never read

    where = ["--endpoint-name", ep.name, "--input-prefix", PREFIX]
    for job, expected in [
        ("run-torn", "not JSON"),
        ("run-local", "OutputLocation is not an s3:// location"),
        ("run-other", "names job 'run-good'"),
        ("run-list", "not a JSON object"),
    ]:
        assert main(["jobs", "status", *where, job]) == 1, job
        err = capsys.readouterr().err
        assert expected in err and "name the job by its output location" in err, (job, err)
        assert "Traceback" not in err and "root:" not in err
    assert main(["jobs", "status", *where, "../../other/thing"]) == 2
    assert "neither an inference id" in capsys.readouterr().err

    # An output object larger than any answer: a failed job, not a 17 MB read into memory.
    huge = AsyncInvocation(
        "huge", ep.name, "", "", f"{ep.output}/huge.out", f"{ep.failure}/huge-error.out", ""
    )
    storage.write_bytes(huge.output_location, b"{" + b" " * MAX_RESULT_BYTES + b"}")
    outcome = endpoint.outcome(huge)
    assert outcome.status == "failed" and outcome.result is None
    assert outcome.error is not None and outcome.error.code == "endpoint_error"
    assert "over 16 MB" in outcome.error.message
    assert endpoint.outcome(huge, read_result=False).status == "succeeded"
    # A failure object larger than an error document: its first 64 KB are read (a ranged
    # read), where the server's code still shows; the rest never leaves S3.
    failed = AsyncInvocation(
        "bad", ep.name, "", "", f"{ep.output}/bad.out", f"{ep.failure}/bad-error.out", ""
    )
    body = json.dumps({"error": {"code": "invalid_image", "message": "x" * (1 << 20)}})
    storage.write_bytes(failed.failure_location or "", body.encode())
    outcome = endpoint.outcome(failed)
    assert outcome.status == "failed" and outcome.error is not None
    assert outcome.error.code == "invalid_image"
    assert failed.failure_location in outcome.error.message  # not the 1 MB message itself
    assert len(storage.read_head(failed.failure_location or "", 100)) == 100


def test_own_server_input_location_sends_its_content_type(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Point 8 on a StyGig server: a stored JSON request that does not start with "{" was
    read as a photo (``not_an_image``) because no content type was sent."""
    from tests.integration.test_jobs import async_server

    inputs = tmp_path / "in"
    inputs.mkdir()
    stored = inputs / "request.json"
    stored.write_bytes(b"\xef\xbb\xbf" + json.dumps({"item_ids": ["sku-0014"]}).encode())
    with async_server(sample[1], tmp_path, "--allow-input-prefix", str(inputs)) as server:
        argv = ["jobs", "submit", "--url", server.url, "--input-location", str(stored)]
        assert main([*argv, "--wait", "--interval", "0.05"]) == 0
        assert json.loads(_out(capsys))["Status"] == "succeeded"
        assert main([*argv, "--content-type", "text/csv"]) == 2
        assert "--content-type" in capsys.readouterr().err


def _interrupt_when(check: Any) -> None:
    """Ctrl-C to this process once ``check()`` holds (or after a minute: never a hang)."""
    deadline = time.monotonic() + 60
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    # To the main thread itself: a process-wide signal may land on another thread and leave
    # the main one asleep in its wait.
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _outfits(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        r["id"]: r["recommendation"]["outfit"]["item_ids"] for r in records if r["status"] == "ok"
    }


def test_batch_through_the_endpoint_bounded_resumed_and_like_in_process(
    runtime: FakeAsyncRuntime,
    sample: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    catalog, artifact = sample
    ep = create_async_endpoint("nightly")
    photos = tmp_path / "photos"
    photos.mkdir()
    for source in sorted((catalog / "queries").glob("*.jpg")):
        (photos / source.name).write_bytes(source.read_bytes())
    (photos / "zz-torn.jpg").write_bytes(
        (catalog / "queries" / "blue-jeans.jpg").read_bytes()[:300]
    )
    n = len(list(photos.iterdir()))
    out = tmp_path / "recs.jsonl"
    argv = ["batch", "--endpoint-name", ep.name, "--input-prefix", PREFIX, "--input",
            str(photos), "--output", str(out), "--option", "k=2", "--concurrency", "2",
            "--interval", "0.05", "--max-interval", "0.5", "--quiet", "--json"]  # fmt: skip

    # Ctrl-C while two jobs are in flight on the endpoint: the run stops, its output holds
    # what was finished, and the two jobs go on there.
    runtime.hold_from = 2

    def two_held_two_written() -> bool:
        return runtime.held == 2 and out.exists() and out.read_bytes().count(b"\n") == 2

    interrupter = threading.Thread(target=_interrupt_when, args=(two_held_two_written,))
    interrupter.start()
    try:
        assert main(argv) == 130
    finally:
        interrupter.join(90)
    assert "interrupted" in capsys.readouterr().err
    assert [r["index"] for r in _records(out)] == [0, 1]
    runtime.release.set()
    wait_for(runtime.idle, 60)
    # An outage one submission later stops the next run: the held jobs were followed to their
    # results (their receipts, not submitted again), one new input went in, then AWS refused.
    runtime.fail_after = 5
    assert main(argv) == 7
    assert "ServiceUnavailable" in capsys.readouterr().err
    assert len(_records(out)) in (4, 5)  # 4: input 5's submission came before input 4's
    # The last run follows what was submitted and submits the rest.
    runtime.fail_after = None
    assert main(argv) == 0
    summary = json.loads(_out(capsys))
    assert summary["complete"] and summary["total"] == n and summary["errors"] == 1
    records = _records(out)
    assert sorted(r["index"] for r in records) == list(range(n))
    ids = [c["InferenceId"] for c in runtime.calls]
    assert len(ids) == len(set(ids)) == n  # each input submitted exactly once
    assert runtime.max_in_flight <= 2
    torn = next(r for r in records if r["id"] == "zz-torn.jpg")
    assert torn["status"] == "error"
    assert torn["error"]["code"] in ("invalid_image", "not_an_image", "corrupt_image")
    assert all(
        c["ContentType"] == "image/jpeg" and c["CustomAttributes"] == "k=2" for c in runtime.calls
    )

    # The same answers as the in-process run over the same artifact.
    local = tmp_path / "local.jsonl"
    run_batch(Recommender.from_path(artifact), str(photos), str(local), options={"k": 2},
              progress=False)  # fmt: skip
    assert _outfits(records) == _outfits(_records(local))

    # Complete: a rerun does nothing; other arguments are refused.
    assert main(argv) == 0
    assert json.loads(_out(capsys))["processed"] == 0 and len(runtime.calls) == n
    assert main([*argv, "--option", "use_color=false"]) == 2
    assert "other arguments" in capsys.readouterr().err
    assert main([*argv, "--option", "k=3"]) == 2  # k=2 and k=3: given twice (review, s42)
    assert "k is given 2 times" in capsys.readouterr().err

    # A catalogue with the deployed artifact beside it: rows known to it go by item id (JSON),
    # into an S3 prefix; a rejected row is its own error record.
    csv = tmp_path / "catalog.csv"
    lines = (catalog / "catalog.csv").read_text(encoding="utf-8").splitlines()
    csv.write_text("\n".join([*lines[:4], "sku-bad,,,"]) + "\n", encoding="utf-8")
    calls_before = len(runtime.calls)
    dst = f"s3://{BUCKET}/recs/catalog/"
    assert main(["batch", "--endpoint-name", ep.name, "--input-prefix", PREFIX, "--input",
                 str(csv), "--artifact", str(artifact), "--output", dst, "--quiet", "--json",
                 "--interval", "0.05"]) == 0  # fmt: skip
    summary = json.loads(_out(capsys))
    assert summary["total"] == 4 and summary["errors"] == 1
    parts = [k for k in storage.list_keys(dst) if k.rsplit("/", 1)[-1].startswith("part-")]
    rows = [json.loads(x) for k in parts for x in storage.read_bytes(k).splitlines()]
    assert [r["status"] for r in rows].count("ok") == 3
    assert all(c["ContentType"] == "application/json" for c in runtime.calls[calls_before:])
    assert {r["recommendation"]["query"][0]["source"] for r in rows if r["status"] == "ok"} == {
        f"item:{r['id']}" for r in rows if r["status"] == "ok"
    }

    # Photos already in S3 are not copied: the endpoint reads each where it is.
    for photo in sorted((catalog / "queries").glob("*.jpg"))[:2]:
        storage.write_bytes(f"s3://{BUCKET}/shop-photos/{photo.name}", photo.read_bytes())
    calls_before = len(runtime.calls)
    remote_out = tmp_path / "remote.jsonl"
    assert main(["batch", "--endpoint-name", ep.name, "--input-prefix", PREFIX, "--input",
                 f"s3://{BUCKET}/shop-photos/", "--output", str(remote_out), "--quiet",
                 "--interval", "0.05"]) == 0  # fmt: skip
    assert sorted(c["InputLocation"] for c in runtime.calls[calls_before:]) == sorted(
        storage.list_keys(f"s3://{BUCKET}/shop-photos/")
    )
    assert [r["status"] for r in _records(remote_out)] == ["ok", "ok"]
