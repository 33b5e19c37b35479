"""Live SageMaker hosting prices from the AWS Price List API (``stygig advise --live-prices``).

One ``GetProducts`` call per instance type of the matrix, filtered to service ``AmazonSageMaker``,
the region (``regionCode``), the instance type and the ``Hosting`` component (real-time and
asynchronous endpoints); of the products returned, the one whose usage type is
``<REGION>-Host:<type>``, and of its terms the on-demand price per hour in USD. The Price List
API answers from a few regions only (``us-east-1`` here) whatever region is priced.

Anything that goes wrong (no network, no credentials, no permission ``pricing:GetProducts``, an
answer without a usable price) leaves that type, or all, at the typed-in price of
``instances.yaml``; :func:`live_prices` says which and why.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LivePrices", "hosting_price", "live_prices", "pricing_client"]

PRICING_ENDPOINT_REGION = "us-east-1"
SERVICE = "AmazonSageMaker"


@dataclass
class LivePrices:
    """What the Price List API gave: prices found, types it had none for, and why not all."""

    region: str
    prices: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    problem: str | None = None  # set when the API could not be used at all

    def note(self, fallback: str) -> str:
        """One line for ``advise``: where each price came from."""
        if self.problem is not None:
            return f"live prices unavailable ({self.problem}); typed-in table used: {fallback}"
        text = f"AWS Price List API, {self.region} on-demand hosting, {len(self.prices)} types"
        if self.missing:
            text += f"; typed-in ({fallback}) for {', '.join(self.missing)}"
        return text


def pricing_client() -> Any:
    """A ``pricing`` client that gives up quickly when the API cannot be reached."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=15, retries={"total_max_attempts": 2})
    return boto3.client("pricing", region_name=PRICING_ENDPOINT_REGION, config=config)


def _filters(region: str, instance_type: str) -> list[dict[str, str]]:
    return [
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
        {"Type": "TERM_MATCH", "Field": "instanceType", "Value": instance_type},
        {"Type": "TERM_MATCH", "Field": "component", "Value": "Hosting"},
    ]


def _on_demand_per_hour(product: dict[str, Any]) -> float | None:
    for term in (product.get("terms", {}).get("OnDemand") or {}).values():
        for dim in (term.get("priceDimensions") or {}).values():
            usd = (dim.get("pricePerUnit") or {}).get("USD")
            if dim.get("unit") in ("Hrs", "Hours", "hour") and usd is not None:
                try:
                    price = float(usd)
                except ValueError:
                    continue
                if price > 0:
                    return price
    return None


def hosting_price(pricing: Any, region: str, instance_type: str) -> float | None:
    """The on-demand hourly price of ``instance_type`` for hosting in ``region``, or ``None``."""
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {
            "ServiceCode": SERVICE,
            "Filters": _filters(region, instance_type),
            "FormatVersion": "aws_v1",
            "MaxResults": 100,
        }
        if token:
            kwargs["NextToken"] = token
        response = pricing.get_products(**kwargs)
        for text in response.get("PriceList", []):
            product = json.loads(text) if isinstance(text, str) else text
            usage = str(product.get("product", {}).get("attributes", {}).get("usagetype", ""))
            if usage.endswith(f"-Host:{instance_type}") or usage == f"Host:{instance_type}":
                price = _on_demand_per_hour(product)
                if price is not None:
                    return price
        token = response.get("NextToken")
        if not token:
            return None


def live_prices(pricing: Any, region: str, instance_types: Iterable[str]) -> LivePrices:
    """Each instance type's live price; never raises for what AWS or the network answers."""
    from botocore.exceptions import BotoCoreError, ClientError

    found = LivePrices(region)
    for name in instance_types:
        try:
            price = hosting_price(pricing, region, name)
        except ClientError as e:
            error = e.response.get("Error", {})
            found.problem = f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip()
            found.prices.clear()
            return found
        except BotoCoreError as e:  # no network, no credentials, a timeout
            found.problem = f"{type(e).__name__}: {e}"
            found.prices.clear()
            return found
        except (ValueError, TypeError, AttributeError) as e:  # a malformed answer
            found.problem = f"unreadable Price List answer ({type(e).__name__})"
            found.prices.clear()
            return found
        if price is None:
            found.missing.append(name)
        else:
            found.prices[name] = price
    if not found.prices:
        found.problem = f"no hosting prices found for region {region}"
    return found
