"""SageMaker endpoints: create, wait, update with a traffic split, promote, roll back, delete.

Every AWS call goes through :func:`call`, which turns botocore's errors into StyGig's: no
credentials or no region -> :class:`ConfigError` (exit 3), an unknown endpoint ->
:class:`NotFoundError`, anything else AWS refuses -> :class:`ServerError` (exit 7).

Names: a deployment of endpoint ``E`` at time ``T`` creates model ``E-T`` and endpoint config
``E-T``; its production variant is named ``v-T``. During a blue/green update the endpoint
config holds two variants, the live one first and the candidate second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stygig.errors import ConfigError, InvalidOptionsError, NotFoundError, ServerError, StygigError

__all__ = [
    "AsyncSettings",
    "Deployment",
    "Variant",
    "aws_client",
    "call",
    "create_model",
    "delete_endpoint",
    "deploy_endpoint",
    "promote",
    "rollback",
    "set_traffic",
    "start_canary",
    "wait_for_endpoint",
]

_MAX_NAME = 63


def aws_client(service: str, region: str | None = None) -> Any:
    """A boto3 client; region from ``region`` or the standard AWS environment."""
    try:
        import boto3
        from botocore.exceptions import NoRegionError
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("AWS commands need boto3: pip install 'stygig[aws]'") from e
    try:
        return boto3.client(service, region_name=region)
    except NoRegionError as e:
        raise ConfigError(
            "no AWS region: pass --region or set AWS_DEFAULT_REGION", code="aws_region"
        ) from e


def translate(e: Exception, what: str) -> StygigError:
    """A botocore exception as the StyGig error that says what to do."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(e, NoCredentialsError | PartialCredentialsError):
        return ConfigError(
            f"{what}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run `aws configure`",
            code="aws_credentials",
        )
    if isinstance(e, NoRegionError):
        return ConfigError(f"{what}: no AWS region; pass --region or set AWS_DEFAULT_REGION")
    if isinstance(e, ClientError):
        error = e.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", e))
        if "Could not find" in message or code in ("ResourceNotFound", "ObjectNotFoundException"):
            return NotFoundError(f"{what}: {message}", code="aws_not_found")
        return ServerError(f"{what}: AWS refused ({code}): {message}", code="aws_error")
    return ServerError(f"{what}: {e}", code="aws_error")


def call(client: Any, operation: str, **kwargs: Any) -> dict[str, Any]:
    """``client.<operation>(**kwargs)`` with AWS errors translated."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response: dict[str, Any] = getattr(client, operation)(**kwargs)
    except (BotoCoreError, ClientError) as e:
        raise translate(e, operation) from e
    return response


@dataclass(frozen=True)
class Variant:
    """A production variant: which model runs on which instances, with what traffic weight."""

    name: str
    model_name: str
    instance_type: str
    instance_count: int = 1
    weight: float = 1.0

    def to_api(self) -> dict[str, Any]:
        """The ``ProductionVariants`` entry."""
        return {
            "VariantName": self.name,
            "ModelName": self.model_name,
            "InstanceType": self.instance_type,
            "InitialInstanceCount": self.instance_count,
            "InitialVariantWeight": float(self.weight),
        }

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Variant:
        """A variant from a ``DescribeEndpointConfig`` entry."""
        return cls(
            data["VariantName"],
            data["ModelName"],
            data["InstanceType"],
            int(data.get("InitialInstanceCount", 1)),
            float(data.get("InitialVariantWeight", 1.0)),
        )


@dataclass(frozen=True)
class AsyncSettings:
    """Asynchronous inference: where results go, who is told, how many at once."""

    s3_output_path: str
    s3_failure_path: str | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    max_concurrent_per_instance: int = 4

    def to_api(self) -> dict[str, Any]:
        """The ``AsyncInferenceConfig`` of an endpoint config."""
        output: dict[str, Any] = {"S3OutputPath": self.s3_output_path}
        if self.s3_failure_path:
            output["S3FailurePath"] = self.s3_failure_path
        topics = {"SuccessTopic": self.success_topic, "ErrorTopic": self.error_topic}
        if any(topics.values()):
            output["NotificationConfig"] = {k: v for k, v in topics.items() if v}
        return {
            "ClientConfig": {
                "MaxConcurrentInvocationsPerInstance": self.max_concurrent_per_instance
            },
            "OutputConfig": output,
        }


@dataclass(frozen=True)
class Deployment:
    """What a deployment created."""

    endpoint_name: str
    config_name: str
    model_name: str
    variant_name: str


def stamp() -> str:
    """A name suffix from the current UTC time (SageMaker names allow [a-zA-Z0-9-])."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def _name(endpoint: str, suffix: str) -> str:
    return f"{endpoint[: _MAX_NAME - len(suffix) - 1]}-{suffix}"


def create_model(
    sm: Any, *, name: str, image_uri: str, model_uri: str, role_arn: str
) -> dict[str, Any]:
    """A SageMaker model: the container image started as ``serve`` on ``model.tar.gz``."""
    if not model_uri.startswith("s3://"):
        raise InvalidOptionsError(f"--model-uri must be an s3:// URI, not {model_uri!r}")
    return call(
        sm,
        "create_model",
        ModelName=name,
        ExecutionRoleArn=role_arn,
        PrimaryContainer={"Image": image_uri, "ModelDataUrl": model_uri, "Mode": "SingleModel"},
    )


def deploy_endpoint(
    sm: Any,
    *,
    endpoint_name: str,
    model_uri: str,
    image_uri: str,
    role_arn: str,
    instance_type: str,
    instance_count: int = 1,
    async_settings: AsyncSettings | None = None,
    suffix: str | None = None,
) -> Deployment:
    """Create the model, the endpoint config (async when asked) and the endpoint."""
    if instance_count < 1:
        raise InvalidOptionsError("--instance-count must be >= 1")
    suffix = suffix or stamp()
    name = _name(endpoint_name, suffix)
    create_model(sm, name=name, image_uri=image_uri, model_uri=model_uri, role_arn=role_arn)
    variant = Variant(f"v-{suffix}", name, instance_type, instance_count)
    config: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": [variant.to_api()]}
    if async_settings is not None:
        config["AsyncInferenceConfig"] = async_settings.to_api()
    call(sm, "create_endpoint_config", **config)
    call(sm, "create_endpoint", EndpointName=endpoint_name, EndpointConfigName=name)
    return Deployment(endpoint_name, name, name, variant.name)


def wait_for_endpoint(
    sm: Any,
    name: str,
    *,
    poll_s: float = 15.0,
    timeout_s: float = 3600.0,
    progress: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the endpoint leaves Creating/Updating; ``progress`` hears every status."""
    t0 = time.monotonic()
    while True:
        info = call(sm, "describe_endpoint", EndpointName=name)
        status = str(info.get("EndpointStatus"))
        elapsed = time.monotonic() - t0
        progress(f"endpoint {name}: {status} ({elapsed:.0f} s)")
        if status == "Failed":
            reason = info.get("FailureReason", "no reason given")
            raise ServerError(f"endpoint {name} failed: {reason}", code="endpoint_failed")
        if status not in ("Creating", "Updating", "SystemUpdating", "RollingBack"):
            return info
        if elapsed > timeout_s:
            raise ServerError(
                f"endpoint {name} still {status} after {timeout_s:.0f} s", code="endpoint_timeout"
            )
        sleep(poll_s)


def live_config(sm: Any, endpoint_name: str) -> tuple[dict[str, Any], list[Variant]]:
    """The endpoint's current endpoint config and its variants (live first)."""
    endpoint = call(sm, "describe_endpoint", EndpointName=endpoint_name)
    config = call(sm, "describe_endpoint_config", EndpointConfigName=endpoint["EndpointConfigName"])
    return config, [Variant.from_api(v) for v in config["ProductionVariants"]]


def _switch(sm: Any, endpoint_name: str, old: dict[str, Any], variants: list[Variant]) -> str:
    """A new endpoint config with ``variants`` (async settings kept), applied to the endpoint."""
    name = _name(endpoint_name, stamp())
    if name == old["EndpointConfigName"]:
        name = _name(endpoint_name, stamp() + "-b")
    config: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": [v.to_api() for v in variants],
    }
    if old.get("AsyncInferenceConfig"):
        config["AsyncInferenceConfig"] = old["AsyncInferenceConfig"]
    call(sm, "create_endpoint_config", **config)
    call(sm, "update_endpoint", EndpointName=endpoint_name, EndpointConfigName=name)
    return name


def _check_traffic(percent: float) -> None:
    if not 0 < percent < 100:
        raise InvalidOptionsError("--traffic is the candidate's share in percent, 0 < t < 100")


def start_canary(
    sm: Any,
    *,
    endpoint_name: str,
    model_uri: str,
    image_uri: str,
    role_arn: str,
    traffic_percent: float,
    instance_type: str | None = None,
    instance_count: int | None = None,
) -> Deployment:
    """Blue/green: add a candidate variant taking ``traffic_percent`` of the requests."""
    _check_traffic(traffic_percent)
    old, variants = live_config(sm, endpoint_name)
    if len(variants) != 1:
        raise InvalidOptionsError(
            f"endpoint {endpoint_name} already splits traffic between "
            f"{', '.join(v.name for v in variants)}: promote or roll back first"
        )
    live = variants[0]
    suffix = stamp()
    name = _name(endpoint_name, suffix)
    create_model(sm, name=name, image_uri=image_uri, model_uri=model_uri, role_arn=role_arn)
    candidate = Variant(
        f"v-{suffix}",
        name,
        instance_type or live.instance_type,
        instance_count or live.instance_count,
        traffic_percent,
    )
    blue = Variant(
        live.name, live.model_name, live.instance_type, live.instance_count, 100 - traffic_percent
    )
    config_name = _switch(sm, endpoint_name, old, [blue, candidate])
    return Deployment(endpoint_name, config_name, name, candidate.name)


def set_traffic(sm: Any, endpoint_name: str, traffic_percent: float) -> None:
    """Change the candidate's share of an endpoint that already has two variants."""
    _check_traffic(traffic_percent)
    _, variants = live_config(sm, endpoint_name)
    if len(variants) != 2:
        raise InvalidOptionsError(
            f"endpoint {endpoint_name} has no candidate variant: give --model-uri to start one"
        )
    weights = (100 - traffic_percent, traffic_percent)
    call(
        sm,
        "update_endpoint_weights_and_capacities",
        EndpointName=endpoint_name,
        DesiredWeightsAndCapacities=[
            {"VariantName": v.name, "DesiredWeight": float(w)}
            for v, w in zip(variants, weights, strict=True)
        ],
    )


def _keep_one(sm: Any, endpoint_name: str, index: int) -> Variant:
    old, variants = live_config(sm, endpoint_name)
    if len(variants) != 2:
        raise InvalidOptionsError(
            f"endpoint {endpoint_name} has {len(variants)} variant(s); promote and rollback "
            "need a live variant and a candidate (`stygig deploy update --traffic`)"
        )
    keep = variants[index]
    keep = Variant(keep.name, keep.model_name, keep.instance_type, keep.instance_count, 1.0)
    _switch(sm, endpoint_name, old, [keep])
    return keep


def promote(sm: Any, endpoint_name: str) -> Variant:
    """Send all traffic to the candidate and retire the old variant."""
    return _keep_one(sm, endpoint_name, 1)


def rollback(sm: Any, endpoint_name: str) -> Variant:
    """Send all traffic back to the live variant and retire the candidate."""
    return _keep_one(sm, endpoint_name, 0)


def delete_endpoint(sm: Any, endpoint_name: str) -> list[str]:
    """Delete the endpoint, its endpoint config and its models; the names deleted."""
    config, variants = live_config(sm, endpoint_name)
    call(sm, "delete_endpoint", EndpointName=endpoint_name)
    call(sm, "delete_endpoint_config", EndpointConfigName=config["EndpointConfigName"])
    deleted = [f"endpoint {endpoint_name}", f"endpoint config {config['EndpointConfigName']}"]
    for v in variants:
        call(sm, "delete_model", ModelName=v.model_name)
        deleted.append(f"model {v.model_name}")
    return deleted
