"""An async submission's header parameters are validated before the 202, by one model."""

from __future__ import annotations

import pytest

from stygig.errors import InvalidOptionsError
from stygig.serving.async_api import SubmissionHeaders

SECRET = "s3cr3t-VALUE"


def test_valid_headers_are_read() -> None:
    given = SubmissionHeaders.read(
        {
            "x-amzn-sagemaker-inference-id": "look-42",
            "x-amzn-sagemaker-invocationtimeoutseconds": "120",
            "x-amzn-sagemaker-inputlocation": "s3://bucket/in.json",
            "content-type": "image/jpeg",  # other headers are not its business
        }
    )
    assert given.inference_id == "look-42" and given.time_limit_s == 120
    assert isinstance(given.time_limit_s, int)
    assert given.input_location == "s3://bucket/in.json" and given.webhook is None
    assert SubmissionHeaders.read({}).time_limit_s is None


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("x-amzn-sagemaker-inference-id", f"{SECRET}-error", "InferenceId"),
        ("x-amzn-sagemaker-inference-id", f"../{SECRET}", "InferenceId"),
        ("x-amzn-sagemaker-inference-id", "x" * 129, "InferenceId"),
        ("x-amzn-sagemaker-invocationtimeoutseconds", SECRET, "InvocationTimeoutSeconds"),
        ("x-amzn-sagemaker-invocationtimeoutseconds", "0", "InvocationTimeoutSeconds"),
        ("x-amzn-sagemaker-invocationtimeoutseconds", "3601", "InvocationTimeoutSeconds"),
        ("x-amzn-sagemaker-invocationtimeoutseconds", "nan", "InvocationTimeoutSeconds"),
        # review, session 42: SageMaker's header is a whole number of seconds, 1 to 3600
        ("x-amzn-sagemaker-invocationtimeoutseconds", "1.5", "InvocationTimeoutSeconds"),
        ("x-amzn-sagemaker-invocationtimeoutseconds", "1e2", "InvocationTimeoutSeconds"),
        ("x-amzn-sagemaker-invocationtimeoutseconds", "0.001", "InvocationTimeoutSeconds"),
        ("x-amzn-sagemaker-invocationtimeoutseconds", "-5", "InvocationTimeoutSeconds"),
        ("x-amzn-sagemaker-invocationtimeoutseconds", "６０", "InvocationTimeoutSeconds"),
        ("x-amzn-sagemaker-inputlocation", "s3://" + "a" * 3000, "InputLocation"),
        ("x-stygig-webhook", "", "X-StyGig-Webhook"),
    ],
)
def test_bad_headers_are_refused_by_name(name: str, value: str, named: str) -> None:
    with pytest.raises(InvalidOptionsError) as refused:
        SubmissionHeaders.read({name: value})
    assert refused.value.message.startswith(named) and SECRET not in refused.value.message


def test_webhook_lookups_are_bounded_in_number_and_time() -> None:
    """A client's webhook host is resolved by the system resolver, which cannot be stopped: at
    most `slots` lookups run at once, a request waits at most `timeout_s`, and a stuck lookup
    keeps its slot until it really ends."""
    import asyncio
    import threading

    from stygig.serving.async_api import _WebhookChecks

    release = threading.Event()
    started: list[str] = []

    class Stuck:
        def check_url(self, url: str) -> None:
            started.append(url)
            if url.endswith("slow"):
                release.wait(30)

    async def scenario() -> list[str]:
        checks = _WebhookChecks(Stuck(), slots=1, timeout_s=0.2)  # type: ignore[arg-type]
        outcomes = []
        for url in ("https://a/slow", "https://b/fast"):
            try:
                await checks.check(url)
                outcomes.append("ok")
            except InvalidOptionsError as e:
                outcomes.append(e.code)
        release.set()  # the stuck lookup ends: its slot comes back
        await asyncio.wait_for(checks.slots.acquire(), 10)
        checks.slots.release()
        await checks.check("https://c/fast")
        return outcomes

    assert asyncio.run(scenario()) == ["webhook_unresolvable", "webhook_unresolvable"]
    # The second lookup never started: the only slot was held by the stuck one.
    assert started == ["https://a/slow", "https://c/fast"]
