"""`stygig invoke --endpoint-name` and `--report` against moto in server mode (SageMaker,
SageMaker runtime, CloudWatch over real HTTP on 127.0.0.1).

moto lacks two things, supplied here: a model behind the endpoint (its runtime answers what is
queued through moto's own API, here a StyGig answer) and CloudWatch percentiles (``p50``,
``p99``), which :func:`_percentiles` computes for moto from the datapoints the test puts in.
The test puts SageMaker's metrics itself, as SageMaker would after the load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from stygig.cli import main
from stygig.deploy import endpoint_metrics as em
from stygig.deploy import invoke as inv
from tests.integration.server_fixtures import free_port

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:botocore.*")

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/stygig"
ANSWER = {
    "mode": "outfit",
    "query": [{"category": "shirt", "category_source": "vote", "votes": {"shirt": 4},
               "rgb": [10, 20, 30]}],
    "items": [{"id": "a", "rgb": [1, 2, 3], "boost": 1.15}],
    "timings_ms": {"embed": 5.0, "total": 21.5},
}  # fmt: skip


def _percentiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto answers no percentile; give it CloudWatch's nearest-rank pNN on the raw values."""
    from moto.cloudwatch import models

    real = models.Statistics.get_statistics_for_type

    def with_percentiles(self: Any, stat: str) -> Any:
        if stat.startswith("p") and stat[1:].replace(".", "").isdigit():
            values = sorted(self.metric_single_values_list)
            if not values:
                return None
            rank = math.ceil(float(stat[1:]) / 100 * len(values))
            return values[max(rank, 1) - 1]
        return real(self, stat)

    monkeypatch.setattr(models.Statistics, "get_statistics_for_type", with_percentiles)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    _percentiles(monkeypatch)
    try:
        yield url
    finally:
        httpx.post(f"{url}/moto-api/reset")
        server.stop()


def _endpoint(name: str) -> str:
    sm = boto3.client("sagemaker", region_name=REGION)
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/stygig:gpu"
    sm.create_model(ModelName=f"{name}-m", ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": image, "ModelDataUrl": "s3://m/model.tar.gz"})  # fmt: skip
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-c",
        ProductionVariants=[{"VariantName": "v-1", "ModelName": f"{name}-m",
                             "InitialInstanceCount": 1, "InstanceType": "ml.g4dn.xlarge"}],
    )  # fmt: skip
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")
    return "v-1"


def _queue_answer(url: str, answer: dict[str, Any]) -> None:
    result = {"Body": json.dumps(answer), "ContentType": "application/json",
              "InvokedProductionVariant": "v-1", "CustomAttributes": ""}  # fmt: skip
    response = httpx.post(f"{url}/moto-api/static/sagemaker/endpoint-results",
                          json={"region": REGION, "results": [result]})  # fmt: skip
    assert response.status_code == 201


def _put_metrics(endpoint: str, variant: str, invocations: int, when: datetime) -> None:
    """What SageMaker publishes for the load: counts, and latencies in microseconds."""
    cw = boto3.client("cloudwatch", region_name=REGION)
    dims = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]
    model_us = [20_000.0 + 1_000 * i for i in range(invocations)]  # 20..27 ms
    over_us = [3_000.0] * (invocations - 1) + [9_000.0]
    data = [
        {"MetricName": "Invocations", "Value": float(invocations), "Unit": "None"},
        {"MetricName": "Invocation4XXErrors", "Value": 0.0, "Unit": "None"},
        {"MetricName": "Invocation5XXErrors", "Value": 1.0, "Unit": "None"},
        {"MetricName": "ModelLatency", "Values": model_us, "Unit": "Microseconds"},
        {"MetricName": "OverheadLatency", "Values": over_us, "Unit": "Microseconds"},
    ]
    cw.put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[{**d, "Dimensions": dims, "Timestamp": when} for d in data],
    )


def test_endpoint_load_check_with_cloudwatch_report(
    aws: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    variant = _endpoint("shop")
    _queue_answer(aws, ANSWER)
    # SageMaker's figures for the minute of the load (put first: CloudWatch has them already,
    # so the report does not wait).
    _put_metrics("shop", variant, 8, datetime.now(UTC))
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"a photo: moto's runtime reads bodies as text")
    code = main(["invoke", "--endpoint-name", "shop", "--image", str(photo),
                 "--concurrency", "4", "--requests", "8", "--report",
                 "--max-p99-ms", "600000"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "inside the server (timings_ms.total)" in out and "21.5 ms" in out
    assert "requests      8 at concurrency 4" in out and "2xx 8" in out
    assert "server (ms)   p50 21.5" in out
    assert "CloudWatch AWS/SageMaker, endpoint shop" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("v-1"))
    # 8 invocations, 0 4XX, 1 5XX; model p50 23 ms (4th of 20..27), p99 27, average 23.5;
    # overhead p50 3, p99 9, average 3.75.
    assert row.split()[:4] == ["v-1", "8", "0", "1"]
    assert "23.0/27.0/23.5" in row and "3.0/9.0/3.8" in row
    assert "p50 split (v-1): client " in out and "model 23.0 + SageMaker overhead 3.0" in out
    assert "latency budget: the load check's p99" in out


def test_report_alone_and_before_any_datapoint(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    variant = _endpoint("quiet")
    assert main(["invoke", "--endpoint-name", "quiet", "--report"]) == 0
    out = capsys.readouterr().out
    assert "no datapoints yet" in out
    _put_metrics("quiet", variant, 4, datetime.now(UTC) - timedelta(minutes=3))
    assert main(["invoke", "--endpoint-name", "quiet", "--report", "--minutes", "10"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "v-1" in line)
    assert row.split()[:4] == ["v-1", "4", "0", "1"]
    # An unknown endpoint is a clear error, not a traceback.
    assert main(["invoke", "--endpoint-name", "nope", "--report"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_runtime_client_pool_follows_the_concurrency(aws: str) -> None:
    assert inv.runtime_client(REGION, pool=100).meta.config.max_pool_connections == 100
    assert inv.runtime_client(REGION, pool=1).meta.config.max_pool_connections == 10


def test_waiting_for_cloudwatch_has_a_deadline() -> None:
    # A fake clock: each sleep moves it on; nothing really waits.
    now = [0.0]
    readings = iter([0.0, 5.0, 8.0])

    def read() -> list[em.VariantMetrics]:
        return [em.VariantMetrics("v", counts={"Invocations": next(readings)})]

    found, complete = em.wait_for_metrics(
        read, expected=8, deadline_s=60, poll_s=15,
        clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s),
    )  # fmt: skip
    assert complete and found[0].invocations == 8 and now[0] == 30
    readings = iter([1.0] * 10)
    now[0] = 0.0
    found, complete = em.wait_for_metrics(
        read, expected=8, deadline_s=40, poll_s=15,
        clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s),
    )  # fmt: skip
    assert not complete and now[0] == 30  # a third wait would pass the 40 s deadline


def test_metric_window_is_whole_minutes() -> None:
    start, end, period = em.metric_window(
        datetime(2026, 1, 1, 10, 0, 42, tzinfo=UTC), datetime(2026, 1, 1, 10, 2, 5, tzinfo=UTC)
    )
    assert (start.minute, start.second, end.minute, period) == (0, 0, 3, 180)
