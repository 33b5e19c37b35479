"""SageMaker endpoints: create, wait, update with a traffic split, promote, roll back, delete.

Every AWS call goes through :func:`call`, which turns botocore's errors into StyGig's: no
credentials or no region -> :class:`ConfigError` (exit 3), an unknown endpoint ->
:class:`NotFoundError`, anything else AWS refuses -> :class:`ServerError` (exit 7).

Names: a deployment of endpoint ``E`` at time ``T`` creates model ``E-T`` and endpoint config
``E-T``; its production variant is named ``v-T``. During a blue/green update the endpoint
config holds two variants, the live one first and the candidate second. Every model and
endpoint config is tagged ``stygig-endpoint=E``: that is how :func:`prune` and
:func:`delete_endpoint` find what a lifecycle step left behind, and never touch another
endpoint's resources.

A lifecycle step leaves nothing stale and nothing unscaled: promote and rollback move the
dropped variant's scaling and alarms to the kept one before dropping it (AWS refuses to drop
an autoscaled variant), a canary gets the live variant's scaling, a failed step deletes the
model and config it created, and each step ends by pruning the configs and models the
endpoint no longer runs on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stygig.errors import ConfigError, InvalidOptionsError, NotFoundError, ServerError, StygigError

__all__ = [
    "ASYNC_MAX_BODY_MB",
    "ASYNC_TIMEOUT_S",
    "TAG",
    "AsyncSettings",
    "Clients",
    "Deployment",
    "Variant",
    "Waiting",
    "aws_client",
    "call",
    "create_model",
    "delete_endpoint",
    "deploy_endpoint",
    "live_config",
    "parse_environment",
    "promote",
    "prune",
    "replace_endpoint",
    "rollback",
    "set_traffic",
    "start_canary",
    "wait_for_endpoint",
    "with_async_limits",
]

TAG = "stygig-endpoint"
#: What an asynchronous invocation may be (SageMaker's own limits): the container is told so
#: through ``STYGIG_SERVE_ARGS`` in the model's environment, which ``docker/serve`` passes on.
ASYNC_MAX_BODY_MB = 1024
ASYNC_TIMEOUT_S = 3600
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}")
_MAX_ENV = 100  # SageMaker's limit on a container's environment entries
_MAX_NAME = 63


def aws_client(service: str, region: str | None = None) -> Any:
    """A boto3 client; region from ``region`` or the standard AWS environment."""
    try:
        import boto3
        from botocore.exceptions import InvalidRegionError, NoRegionError
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("AWS commands need boto3: pip install 'stygig[aws]'") from e
    try:
        return boto3.client(service, region_name=region)
    except NoRegionError as e:
        raise ConfigError(
            "no AWS region: pass --region or set AWS_DEFAULT_REGION", code="aws_region"
        ) from e
    except InvalidRegionError as e:
        given = region or e.kwargs.get("region_name")
        raise ConfigError(
            f"{given!r} is not an AWS region name (e.g. us-east-1)", code="aws_region"
        ) from None


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
            str(data.get("InstanceType") or ""),  # none for a serverless variant
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


@dataclass(frozen=True)
class Waiting:
    """How a step waits for the endpoint: poll interval, deadline, progress lines."""

    poll_s: float = 15.0
    timeout_s: float = 3600.0
    progress: Callable[[str], None] = field(default=print)


@dataclass(frozen=True)
class Clients:
    """The three services a lifecycle step touches: SageMaker, autoscaling, CloudWatch."""

    sm: Any
    aas: Any
    cw: Any

    @classmethod
    def connect(cls, region: str | None = None) -> Clients:
        """Clients for ``region`` (default: the AWS environment)."""
        return cls(
            aws_client("sagemaker", region),
            aws_client("application-autoscaling", region),
            aws_client("cloudwatch", region),
        )


def parse_environment(pairs: Sequence[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` flags as the container's environment (names checked, no repeats).

    Values are never echoed in errors: they may be secrets (which belong in Secrets Manager,
    not here: a model's environment is readable by anyone allowed ``DescribeModel``).
    """
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_KEY.fullmatch(key):
            # Without "=" the whole pair is the key as read: a value may be in it
            # ("API_TOKEN:secret" was echoed; review, session 49), so it is named only
            # when it is a valid name.
            named = f"--env {key!r}" if _ENV_KEY.fullmatch(key) else "an --env pair"
            raise InvalidOptionsError(
                f"{named}: expected KEY=VALUE, KEY made of letters, digits and _ "
                "and not starting with a digit",
                code="invalid_env",
            )
        if key in env:
            raise InvalidOptionsError(f"--env {key}: given twice", code="invalid_env")
        if len(value) > 1024:
            raise InvalidOptionsError(
                f"--env {key}: SageMaker allows values up to 1024 characters", code="invalid_env"
            )
        env[key] = value
    if len(env) > _MAX_ENV:
        raise InvalidOptionsError(f"--env: SageMaker allows {_MAX_ENV} variables at most")
    token = [k for k in ("STYGIG_AUTH_TOKEN", "STYGIG_AUTH_TOKEN_FILE") if k in env]
    if token or "--auth-token-file" in env.get("STYGIG_SERVE_ARGS", "").split():
        # SageMaker's InvokeEndpoint cannot send the bearer header: the endpoint passed its
        # /ping and refused every request (401), and the token stood in plain text in the
        # model's description (review, session 53). IAM authenticates the callers here.
        named = token[0] if token else "STYGIG_SERVE_ARGS --auth-token-file"
        raise InvalidOptionsError(
            f"--env {named}: a SageMaker endpoint takes no bearer token (InvokeEndpoint cannot "
            "send it, so every request would be refused); IAM authenticates its callers",
            code="invalid_env",
        )
    if "STYGIG_SERVE_ARGS" in env:
        check_serve_args(env["STYGIG_SERVE_ARGS"])
    return env


def check_serve_args(value: str) -> None:
    """Refuse ``STYGIG_SERVE_ARGS`` that ``stygig serve`` would refuse at start, now, before an
    endpoint is made whose container can never start (review, session 49:
    ``--max-batch 0`` was found only when the container started). Split on white space, as
    ``docker/serve`` splits it."""
    import contextlib
    import io

    from stygig.cli import _parser

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            _parser().parse_args(["serve", "--artifact", "/opt/ml/model", *value.split()])
    except SystemExit:
        lines = said.getvalue().strip().splitlines() or ["not serve's flags"]
        reason = re.sub(r"^stygig( serve)?: error: ", "", lines[-1])
        raise InvalidOptionsError(
            f"--env STYGIG_SERVE_ARGS: {reason}", code="invalid_env"
        ) from None


def with_async_limits(env: dict[str, str]) -> dict[str, str]:
    """``env`` plus the asynchronous limits, as ``serve`` flags in ``STYGIG_SERVE_ARGS``.

    Ours come first, so flags the user put in ``STYGIG_SERVE_ARGS`` win (argparse keeps the
    last); an environment that already carries them is returned unchanged.
    """
    extra = env.get("STYGIG_SERVE_ARGS", "")
    limits = (
        f"--max-body-mb {ASYNC_MAX_BODY_MB} --max-bodies-mb {ASYNC_MAX_BODY_MB} "
        f"--timeout {ASYNC_TIMEOUT_S} --body-timeout {ASYNC_TIMEOUT_S}"
    )
    if extra.startswith(limits):
        return dict(env)
    return {**env, "STYGIG_SERVE_ARGS": f"{limits} {extra}".strip()}


def stamp() -> str:
    """A name suffix from the current UTC time (SageMaker names allow [a-zA-Z0-9-])."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def _name(endpoint: str, suffix: str) -> str:
    return f"{endpoint[: _MAX_NAME - len(suffix) - 1]}-{suffix}"


def _tags(endpoint_name: str | None) -> dict[str, Any]:
    return {"Tags": [{"Key": TAG, "Value": endpoint_name}]} if endpoint_name else {}


def create_model(
    sm: Any,
    *,
    name: str,
    image_uri: str,
    model_uri: str,
    role_arn: str,
    environment: dict[str, str] | None = None,
    endpoint_name: str | None = None,
) -> dict[str, Any]:
    """A SageMaker model: the container image started as ``serve`` on ``model.tar.gz``.

    ``environment`` is the container's (``--env``, the async limits); ``endpoint_name`` tags
    the model as that endpoint's, so that pruning and deleting find it.
    """
    if not model_uri.startswith("s3://"):
        raise InvalidOptionsError(f"--model-uri must be an s3:// URI, not {model_uri!r}")
    container: dict[str, Any] = {"Image": image_uri, "ModelDataUrl": model_uri}
    container["Mode"] = "SingleModel"
    if environment:
        container["Environment"] = dict(environment)
    return call(
        sm,
        "create_model",
        ModelName=name,
        ExecutionRoleArn=role_arn,
        PrimaryContainer=container,
        **_tags(endpoint_name),
    )


def _new_model(
    sm: Any,
    endpoint_name: str,
    suffix: str,
    *,
    model_uri: str,
    image_uri: str,
    role_arn: str,
    environment: dict[str, str] | None,
    asynchronous: bool,
) -> str:
    """Create this endpoint's model named for ``suffix`` (async limits when asked); its name."""
    env = dict(environment or {})
    if asynchronous:
        env = with_async_limits(env)
    name = _name(endpoint_name, suffix)
    create_model(
        sm,
        name=name,
        image_uri=image_uri,
        model_uri=model_uri,
        role_arn=role_arn,
        environment=env,
        endpoint_name=endpoint_name,
    )
    return name


def _undo(sm: Any, endpoint_name: str, *, model: str | None, config: str | None) -> list[str]:
    """Delete what a failed step created, unless the endpoint now runs on it; what went."""
    try:
        current = call(sm, "describe_endpoint", EndpointName=endpoint_name).get(
            "EndpointConfigName"
        )
    except StygigError:
        current = None
    if config is not None and config == current:
        return []  # still rolling out (a timeout): deleting it would break the endpoint
    deleted = []
    for operation, key, name, what in (
        ("delete_endpoint_config", "EndpointConfigName", config, "endpoint config"),
        ("delete_model", "ModelName", model, "model"),
    ):
        if name is None:
            continue
        try:
            call(sm, operation, **{key: name})
            deleted.append(f"{what} {name}")
        except NotFoundError:
            pass
    return deleted


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
    environment: dict[str, str] | None = None,
) -> Deployment:
    """Create the model, the endpoint config (async when asked) and the endpoint.

    An asynchronous endpoint's model gets the asynchronous limits (:func:`with_async_limits`).
    When a call fails after the model exists, the model and config it created are deleted.
    """
    if instance_count < 1:
        raise InvalidOptionsError("--instance-count must be >= 1")
    suffix = suffix or stamp()
    name = _new_model(
        sm,
        endpoint_name,
        suffix,
        model_uri=model_uri,
        image_uri=image_uri,
        role_arn=role_arn,
        environment=environment,
        asynchronous=async_settings is not None,
    )
    variant = Variant(f"v-{suffix}", name, instance_type, instance_count)
    config: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": [variant.to_api()]}
    if async_settings is not None:
        config["AsyncInferenceConfig"] = async_settings.to_api()
    made: str | None = None
    try:
        call(sm, "create_endpoint_config", **config, **_tags(endpoint_name))
        made = name
        call(sm, "create_endpoint", EndpointName=endpoint_name, EndpointConfigName=name)
    except StygigError:
        _undo(sm, endpoint_name, model=name, config=made)
        raise
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


def _settle(sm: Any, endpoint_name: str, config_name: str, waiting: Waiting | None) -> bool:
    """Wait for an update to ``config_name`` and check it took; False when not waiting."""
    if waiting is None:
        return False
    info = wait_for_endpoint(
        sm,
        endpoint_name,
        poll_s=waiting.poll_s,
        timeout_s=waiting.timeout_s,
        progress=waiting.progress,
    )
    if info.get("EndpointConfigName") != config_name:
        reason = info.get("FailureReason", "no reason given")
        raise ServerError(
            f"endpoint {endpoint_name}: the update to {config_name} did not take ({reason}); "
            f"it still runs {info.get('EndpointConfigName')}",
            code="update_rolled_back",
        )
    return True


def _live(sm: Any, endpoint_name: str) -> tuple[dict[str, Any], dict[str, Any], list[Variant]]:
    """The endpoint, its current config and that config's variants (live first)."""
    endpoint = call(sm, "describe_endpoint", EndpointName=endpoint_name)
    config = call(sm, "describe_endpoint_config", EndpointConfigName=endpoint["EndpointConfigName"])
    return endpoint, config, [Variant.from_api(v) for v in config["ProductionVariants"]]


def live_config(sm: Any, endpoint_name: str) -> tuple[dict[str, Any], list[Variant]]:
    """The endpoint's current endpoint config and its variants (live first)."""
    _, config, variants = _live(sm, endpoint_name)
    return config, variants


def _in_service(endpoint: dict[str, Any]) -> None:
    status = endpoint.get("EndpointStatus")
    if status != "InService":
        raise InvalidOptionsError(
            f"endpoint {endpoint.get('EndpointName')} is {status}: wait until it is InService",
            code="endpoint_busy",
        )


def _running(endpoint: dict[str, Any], variant: Variant) -> Variant:
    """``variant`` with the instance count it runs now (autoscaling may have changed it)."""
    for v in endpoint.get("ProductionVariants") or []:
        if v.get("VariantName") == variant.name and v.get("CurrentInstanceCount"):
            count = int(v["CurrentInstanceCount"])
            return Variant(variant.name, variant.model_name, variant.instance_type, count)
    return Variant(variant.name, variant.model_name, variant.instance_type, variant.instance_count)


def _switch(
    sm: Any,
    endpoint_name: str,
    old: dict[str, Any],
    variants: list[Variant],
    asynchronous: dict[str, Any] | None = None,
) -> str:
    """A new endpoint config with ``variants`` (async settings kept), applied to the endpoint.

    The config is deleted again when ``UpdateEndpoint`` refuses it.
    """
    name = _name(endpoint_name, stamp())
    if name == old["EndpointConfigName"]:
        name = _name(endpoint_name, stamp() + "-b")
    config: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": [v.to_api() for v in variants],
    }
    asynchronous = asynchronous or old.get("AsyncInferenceConfig")
    if asynchronous:
        config["AsyncInferenceConfig"] = asynchronous
    call(sm, "create_endpoint_config", **config, **_tags(endpoint_name))
    try:
        call(sm, "update_endpoint", EndpointName=endpoint_name, EndpointConfigName=name)
    except StygigError:
        _undo(sm, endpoint_name, model=None, config=name)
        raise
    return name


def _owned(sm: Any, endpoint_name: str) -> tuple[list[str], list[str]]:
    """The endpoint configs and models tagged as this endpoint's."""
    found: list[list[str]] = []
    # The names start with the endpoint's, cut to leave room for the suffix (:func:`_name`):
    # its first 32 characters are in every one of them.
    probe = endpoint_name[:32]
    for operation, key, name_key, arn_key in (
        ("list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", "EndpointConfigArn"),
        ("list_models", "Models", "ModelName", "ModelArn"),
    ):
        names = []
        token: dict[str, str] = {}
        while True:
            page = call(sm, operation, NameContains=probe, MaxResults=100, **token)
            for entry in page.get(key, []):
                if probe not in entry[name_key]:
                    continue  # NameContains narrows the listing; the tag decides
                tags = call(sm, "list_tags", ResourceArn=entry[arn_key]).get("Tags", [])
                if {"Key": TAG, "Value": endpoint_name} in tags:
                    names.append(entry[name_key])
            if not page.get("NextToken"):
                break
            token = {"NextToken": page["NextToken"]}
        found.append(names)
    return found[0], found[1]


def prune(sm: Any, endpoint_name: str) -> list[str]:
    """Delete this endpoint's configs and models it no longer runs on; what went.

    Only while the endpoint is InService: during an update the old config is still in use.
    """
    endpoint, config, variants = _live(sm, endpoint_name)
    if endpoint.get("EndpointStatus") != "InService":
        return []
    in_use = {v.model_name for v in variants}
    configs, models = _owned(sm, endpoint_name)
    deleted = []
    for name in configs:
        if name != config["EndpointConfigName"]:
            call(sm, "delete_endpoint_config", EndpointConfigName=name)
            deleted.append(f"endpoint config {name}")
    for name in models:
        if name not in in_use:
            call(sm, "delete_model", ModelName=name)
            deleted.append(f"model {name}")
    return deleted


def _check_traffic(percent: float) -> None:
    if not 0 < percent < 100:
        raise InvalidOptionsError("--traffic is the candidate's share in percent, 0 < t < 100")


def _model_environment(sm: Any, model_name: str) -> dict[str, str]:
    container = call(sm, "describe_model", ModelName=model_name).get("PrimaryContainer") or {}
    return dict(container.get("Environment") or {})


def start_canary(
    aws: Clients,
    *,
    endpoint_name: str,
    model_uri: str,
    image_uri: str,
    role_arn: str,
    traffic_percent: float,
    instance_type: str | None = None,
    instance_count: int | None = None,
    environment: dict[str, str] | None = None,
    waiting: Waiting | None = None,
) -> Deployment:
    """Blue/green: add a candidate variant taking ``traffic_percent`` of the requests.

    The candidate's container gets the live model's environment with ``environment`` on top.
    When the live variant autoscales, the candidate gets the same scaling once InService
    (so this needs ``waiting``). When anything fails after the model exists, the model,
    config and scaling created are removed again and the endpoint keeps its live variant.
    """
    from stygig.deploy.autoscaling import apply_scaling, read_scaling, remove_scaling

    _check_traffic(traffic_percent)
    endpoint, old, variants = _live(aws.sm, endpoint_name)
    if len(variants) != 1:
        raise InvalidOptionsError(
            f"endpoint {endpoint_name} already splits traffic between "
            f"{', '.join(v.name for v in variants)}: promote or roll back first"
        )
    _in_service(endpoint)
    live = _running(endpoint, variants[0])
    scaling = read_scaling(aws.aas, endpoint_name, live.name)
    if scaling is not None and waiting is None:
        raise InvalidOptionsError(
            f"variant {live.name} autoscales, and the candidate gets the same scaling once it "
            "is InService: drop --no-wait"
        )
    suffix = stamp()
    name = _new_model(
        aws.sm,
        endpoint_name,
        suffix,
        model_uri=model_uri,
        image_uri=image_uri,
        role_arn=role_arn,
        environment={**_model_environment(aws.sm, live.model_name), **(environment or {})},
        asynchronous=bool(old.get("AsyncInferenceConfig")),
    )
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
    config_name: str | None = None
    try:
        config_name = _switch(aws.sm, endpoint_name, old, [blue, candidate])
        if _settle(aws.sm, endpoint_name, config_name, waiting) and scaling is not None:
            apply_scaling(aws.aas, aws.cw, endpoint_name, candidate.name, scaling)
    except StygigError:
        if scaling is not None and read_scaling(aws.aas, endpoint_name, candidate.name):
            remove_scaling(aws.aas, aws.cw, endpoint_name, candidate.name)
        _report_undo(waiting, _undo(aws.sm, endpoint_name, model=name, config=config_name))
        raise
    return Deployment(endpoint_name, config_name, name, candidate.name)


def _report_undo(waiting: Waiting | None, deleted: list[str]) -> None:
    say = waiting.progress if waiting is not None else print
    for line in deleted:
        say(f"after the failure, deleted {line}")


def replace_endpoint(
    aws: Clients,
    *,
    endpoint_name: str,
    model_uri: str,
    image_uri: str,
    role_arn: str,
    instance_type: str,
    instance_count: int = 1,
    async_settings: AsyncSettings | None = None,
    environment: dict[str, str] | None = None,
    waiting: Waiting,
) -> Deployment:
    """``deploy sync|async --update``: switch a live endpoint to a new model in place.

    The variant keeps its name, so its scaling and alarms stay attached; SageMaker's
    ``UpdateEndpoint`` brings the new fleet up before it retires the old one and rolls back
    on failure. An instance type change under autoscaling deregisters the scaling first (AWS
    refuses it otherwise) and registers the same again after. A failure deletes the new
    model and config; success prunes the old ones.
    """
    from stygig.deploy.autoscaling import apply_scaling, read_scaling, remove_scaling

    endpoint, old, variants = _live(aws.sm, endpoint_name)
    if len(variants) != 1:
        raise InvalidOptionsError(
            f"endpoint {endpoint_name} splits traffic between "
            f"{', '.join(v.name for v in variants)}: promote or roll back first"
        )
    _in_service(endpoint)
    if bool(old.get("AsyncInferenceConfig")) != (async_settings is not None):
        now = "asynchronous" if old.get("AsyncInferenceConfig") else "real-time"
        raise InvalidOptionsError(
            f"endpoint {endpoint_name} is {now}; it cannot change kind in place: delete it "
            "first (`stygig deploy delete`) or pick another --endpoint-name",
            code="endpoint_kind",
        )
    if instance_count < 1:
        raise InvalidOptionsError("--instance-count must be >= 1")
    live = variants[0]
    scaling = read_scaling(aws.aas, endpoint_name, live.name)
    name = _new_model(
        aws.sm,
        endpoint_name,
        stamp(),
        model_uri=model_uri,
        image_uri=image_uri,
        role_arn=role_arn,
        environment=environment,
        asynchronous=async_settings is not None,
    )
    unscaled = False
    config_name: str | None = None
    try:
        if scaling is not None and instance_type != live.instance_type:
            remove_scaling(aws.aas, aws.cw, endpoint_name, live.name)
            unscaled = True
        variant = Variant(live.name, name, instance_type, instance_count)
        config_name = _switch(
            aws.sm,
            endpoint_name,
            old,
            [variant],
            async_settings.to_api() if async_settings is not None else None,
        )
        _settle(aws.sm, endpoint_name, config_name, waiting)
    except StygigError:
        _report_undo(waiting, _undo(aws.sm, endpoint_name, model=name, config=config_name))
        if unscaled and scaling is not None:
            apply_scaling(aws.aas, aws.cw, endpoint_name, live.name, scaling)
        raise
    if unscaled and scaling is not None:
        apply_scaling(aws.aas, aws.cw, endpoint_name, live.name, scaling)
    return Deployment(endpoint_name, config_name, name, live.name)


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


def _keep_one(aws: Clients, endpoint_name: str, index: int, waiting: Waiting | None) -> Variant:
    """Keep variant ``index``, drop the other: its scaling and alarms move to the kept one."""
    from stygig.deploy.alarms import move_alarms
    from stygig.deploy.autoscaling import apply_scaling, read_scaling, remove_scaling

    endpoint, old, variants = _live(aws.sm, endpoint_name)
    if len(variants) != 2:
        raise InvalidOptionsError(
            f"endpoint {endpoint_name} has {len(variants)} variant(s); promote and rollback "
            "need a live variant and a candidate (`stygig deploy update --traffic`)"
        )
    _in_service(endpoint)
    keep = _running(endpoint, variants[index])
    drop = variants[1 - index]
    dropped_scaling = read_scaling(aws.aas, endpoint_name, drop.name)
    if dropped_scaling is not None and read_scaling(aws.aas, endpoint_name, keep.name) is None:
        apply_scaling(aws.aas, aws.cw, endpoint_name, keep.name, dropped_scaling)
    move_alarms(aws.cw, endpoint_name, drop.name, keep.name)
    if dropped_scaling is not None:
        # AWS refuses to remove a variant that is still a scalable target.
        remove_scaling(aws.aas, aws.cw, endpoint_name, drop.name)
    try:
        config_name = _switch(aws.sm, endpoint_name, old, [keep])
        _settle(aws.sm, endpoint_name, config_name, waiting)
    except StygigError:
        if dropped_scaling is not None and read_scaling(aws.aas, endpoint_name, drop.name) is None:
            apply_scaling(aws.aas, aws.cw, endpoint_name, drop.name, dropped_scaling)
        raise
    return keep


def promote(aws: Clients, endpoint_name: str, waiting: Waiting | None = None) -> Variant:
    """Send all traffic to the candidate and retire the old variant."""
    return _keep_one(aws, endpoint_name, 1, waiting)


def rollback(aws: Clients, endpoint_name: str, waiting: Waiting | None = None) -> Variant:
    """Send all traffic back to the live variant and retire the candidate."""
    return _keep_one(aws, endpoint_name, 0, waiting)


def delete_endpoint(
    aws: Clients, endpoint_name: str, *, kept: list[str] | None = None
) -> list[str]:
    """Delete the endpoint with its scaling, alarms, and the configs and models tagged as its
    own; what was deleted. A config or model it ran on without that tag is left (``kept``
    says which and why).

    Leftovers of an endpoint that is already gone (tagged configs and models, scalable
    targets, alarms) are deleted too; with nothing at all to delete it is NotFound.
    """
    from stygig.deploy.alarms import delete_endpoint_alarms
    from stygig.deploy.autoscaling import remove_endpoint_scaling

    missing: NotFoundError | None = None
    configs: list[str] = []
    models: list[str] = []
    try:
        config, variants = live_config(aws.sm, endpoint_name)
        configs.append(config["EndpointConfigName"])
        models.extend(v.model_name for v in variants)
    except NotFoundError as e:
        missing = e
    deleted = remove_endpoint_scaling(aws.aas, aws.cw, endpoint_name)
    deleted += delete_endpoint_alarms(aws.cw, endpoint_name)
    if missing is None:
        call(aws.sm, "delete_endpoint", EndpointName=endpoint_name)
        deleted.append(f"endpoint {endpoint_name}")
    tagged_configs, tagged_models = _owned(aws.sm, endpoint_name)
    # Only what is tagged as this endpoint's: a config or model the endpoint ran on that StyGig
    # did not create (made by hand, or shared with another endpoint) stays, and is said.
    for what, used, tagged in (
        ("config", configs, tagged_configs),
        ("model", models, tagged_models),
    ):
        for name in dict.fromkeys(n for n in used if n not in tagged):
            if kept is not None:
                kept.append(
                    f"{'endpoint config' if what == 'config' else 'model'} {name}: not tagged "
                    f"{TAG}={endpoint_name} (not made by StyGig for this endpoint; another "
                    "endpoint may run on it)"
                )
    for operation, key, names, what in (
        ("delete_endpoint_config", "EndpointConfigName", tagged_configs, "config"),
        ("delete_model", "ModelName", tagged_models, "model"),
    ):
        for name in dict.fromkeys(names):
            try:
                call(aws.sm, operation, **{key: name})
            except NotFoundError:
                continue
            deleted.append(f"endpoint config {name}" if what == "config" else f"model {name}")
    if missing is not None and not deleted:
        raise missing
    return deleted
