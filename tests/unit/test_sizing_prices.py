"""`stygig advise --live-prices`: the AWS Price List API through boto3, the typed-in table as
the fallback. moto has no Price List API, so the one call (GetProducts) is stubbed with
botocore's Stubber and answers shaped like AWS's (aws_v1 documents as JSON strings)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.stub import Stubber  # noqa: E402

from stygig.cli import main  # noqa: E402
from stygig.deploy import prices  # noqa: E402
from stygig.deploy.advisor import load_matrix  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:botocore.*")

REGION = "eu-west-1"


def _product(instance: str, usage: str, usd: str, sku: str) -> str:
    """One Price List document as AWS writes it for SageMaker hosting (trimmed of nothing the
    reader uses; attribute names as in the AmazonSageMaker offer file)."""
    term = f"{sku}.JRTCKXETXF"
    return json.dumps(
        {
            "product": {
                "productFamily": "ML Instance",
                "attributes": {
                    "regionCode": REGION,
                    "servicecode": "AmazonSageMaker",
                    "usagetype": usage,
                    "locationType": "AWS Region",
                    "location": "EU (Ireland)",
                    "servicename": "Amazon SageMaker",
                    "instanceType": instance,
                    "instanceName": instance,
                    "component": "Hosting",
                    "operation": "RunInstance",
                    "vCpu": "2",
                    "memory": "8 GiB",
                },
                "sku": sku,
            },
            "serviceCode": "AmazonSageMaker",
            "terms": {
                "OnDemand": {
                    term: {
                        "priceDimensions": {
                            f"{term}.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "description": f"${usd} per Hosting {instance} in EU (Ireland)",
                                "appliesTo": [],
                                "rateCode": f"{term}.6YS6EN2CT7",
                                "beginRange": "0",
                                "pricePerUnit": {"USD": usd},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2025-11-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                }
            },
            "version": "20251101000000",
            "publicationDate": "2025-11-01T00:00:00Z",
        }
    )


def _expected(instance: str) -> dict[str, Any]:
    return {
        "ServiceCode": "AmazonSageMaker",
        "Filters": [
            {"Type": "TERM_MATCH", "Field": "regionCode", "Value": REGION},
            {"Type": "TERM_MATCH", "Field": "instanceType", "Value": instance},
            {"Type": "TERM_MATCH", "Field": "component", "Value": "Hosting"},
        ],
        "FormatVersion": "aws_v1",
        "MaxResults": 100,
    }


@pytest.fixture
def pricing(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Stubber]]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    client = boto3.client("pricing", region_name="us-east-1")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def _price_every_type(stub: Stubber, skip: str = "") -> dict[str, float]:
    """Queue one answer per matrix row: the real-time SKU beside a notebook one; +10 %."""
    wanted = {}
    for inst in load_matrix().instances:
        docs = [_product(inst.name, f"EU-Notebk:{inst.name}", "9.99", f"N{len(wanted)}")]
        if inst.name != skip:
            usd = f"{inst.price_per_hour * 1.1:.4f}"
            docs.append(_product(inst.name, f"EU-Host:{inst.name}", usd, f"H{len(wanted)}"))
            wanted[inst.name] = float(usd)
        answer = {"FormatVersion": "aws_v1", "PriceList": docs}
        stub.add_response("get_products", answer, _expected(inst.name))
    return wanted


def test_live_prices_are_read_per_instance_type(pricing: tuple[Any, Stubber]) -> None:
    client, stub = pricing
    wanted = _price_every_type(stub, skip="ml.p3.2xlarge")
    found = prices.live_prices(client, REGION, [i.name for i in load_matrix().instances])
    assert found.problem is None
    assert found.prices == wanted  # the Host: SKU, not the notebook one
    assert found.missing == ["ml.p3.2xlarge"]
    note = found.note("us-east-1 on-demand, 2024, copied by hand")
    assert "AWS Price List API, eu-west-1" in note and "typed-in" in note


def test_advise_uses_live_prices(
    pricing: tuple[Any, Stubber],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, stub = pricing
    wanted = _price_every_type(stub)
    monkeypatch.setattr(prices, "pricing_client", lambda: client)
    assert main(["advise", "--mode", "sync", "--requests-per-hour", "10000",
                 "--live-prices", "--region", REGION]) == 0  # fmt: skip
    out = capsys.readouterr().out
    # ml.c5.large at $0.1122/h x 730 h = $81.91 a month.
    assert wanted["ml.c5.large"] == 0.1122
    assert "recommended: 1 x ml.c5.large" in out and "$81.91/month" in out
    assert "prices: AWS Price List API, eu-west-1 on-demand hosting, 10 types" in out


def test_advise_falls_back_when_the_api_refuses(
    pricing: tuple[Any, Stubber],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, stub = pricing
    stub.add_client_error(
        "get_products",
        service_error_code="AccessDeniedException",
        service_message="User is not authorized to perform: pricing:GetProducts",
        http_status_code=400,
    )
    monkeypatch.setattr(prices, "pricing_client", lambda: client)
    assert main(["advise", "--mode", "sync", "--requests-per-hour", "10000",
                 "--live-prices", "--region", REGION]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "live prices unavailable (AccessDeniedException: User is not authorized" in captured.err
    assert "typed-in table used: us-east-1 on-demand, 2024" in captured.err
    assert "$74.46/month" in captured.out  # the typed-in $0.102/h


def test_advise_falls_back_when_the_api_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from botocore.config import Config

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with socket.socket() as s:  # a port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = boto3.client(
        "pricing",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2),
    )
    monkeypatch.setattr(prices, "pricing_client", lambda: client)
    assert main(["advise", "--mode", "async", "--requests-per-hour", "10000",
                 "--live-prices", "--region", REGION]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "live prices unavailable (EndpointConnectionError" in captured.err
    assert "prices: live prices unavailable" in captured.out  # under the table, too
    assert "Traceback" not in captured.err


def test_a_malformed_answer_is_not_a_price(pricing: tuple[Any, Stubber]) -> None:
    client, stub = pricing
    stub.add_response(
        "get_products", {"FormatVersion": "aws_v1", "PriceList": ["{not json"]},
        _expected("ml.c5.large"),
    )  # fmt: skip
    found = prices.live_prices(client, REGION, ["ml.c5.large"])
    assert found.prices == {} and found.problem == "unreadable Price List answer (JSONDecodeError)"
