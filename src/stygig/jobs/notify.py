"""Tell someone a job ended: an HTTP webhook (retried with backoff) and/or an SNS topic.

The message has the shape of SageMaker's asynchronous-inference notification, so consumers
written for SageMaker read it unchanged::

    {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "InferenceResult",
     "inferenceId": "...", "invocationStatus": "Completed" | "Failed", "status": "succeeded",
     "eventTime": "...", "receivedTime": "...",
     "requestParameters": {"inputLocation": "..."},
     "responseParameters": {"outputLocation": "..."},   # or "failureLocation" + "failureReason"
    }

Delivery is at least once: the store marks a notification sent only after it went out, so a
crash in between sends it again after restart. Receivers deduplicate on ``inferenceId``.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from stygig.jobs.store import Job, iso_time

__all__ = ["Notifier", "event_for"]

log = logging.getLogger("stygig.jobs.notify")


def event_for(job: Job) -> dict[str, Any]:
    """The notification message for a finished job."""
    ok = job.status == "succeeded"
    response: dict[str, Any] = (
        {"outputLocation": job.output_location, "contentType": "application/json"}
        if ok
        else {"failureLocation": job.failure_location}
    )
    event: dict[str, Any] = {
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
        "inferenceId": job.id,
        "invocationStatus": "Completed" if ok else "Failed",
        "status": job.status,
        "eventTime": iso_time(job.finished_at),
        "receivedTime": iso_time(job.created_at),
        "attempts": job.attempts,
        "requestParameters": {"inputLocation": job.input_location, "contentType": job.content_type},
        "responseParameters": response,
    }
    if not ok:
        event["failureReason"] = (job.error or {}).get("message", "unknown")
        event["errorCode"] = (job.error or {}).get("code")
    return event


@dataclass(frozen=True)
class Notifier:
    """Where notifications go. Every field is optional; nothing configured means no message.

    Attributes:
        webhook: a URL that receives a ``POST`` with the JSON message (a job's own webhook,
            given at submission, takes precedence).
        success_topic / error_topic: SNS topic ARNs (boto3; the standard AWS configuration).
        retries: webhook attempts after the first one.
        backoff_s: the first pause between attempts; doubled each time (capped at 30 s).
        timeout_s: per webhook request.
    """

    webhook: str | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    retries: int = 5
    backoff_s: float = 0.5
    timeout_s: float = 10.0

    def wants(self, job: Job) -> bool:
        """Whether anything should be sent for ``job``."""
        topic = self.success_topic if job.status == "succeeded" else self.error_topic
        return bool(job.webhook or self.webhook or topic)

    def send(self, job: Job) -> bool:
        """Deliver ``job``'s notification everywhere configured; whether all of it went out."""
        event = event_for(job)
        ok = True
        url = job.webhook or self.webhook
        if url:
            ok = self.post(url, event) and ok
        topic = self.success_topic if job.status == "succeeded" else self.error_topic
        if topic:
            ok = self.publish(topic, event) and ok
        return ok

    def post(self, url: str, event: dict[str, Any]) -> bool:
        """POST ``event`` to ``url``; 2xx is success, anything else is retried with backoff."""
        body = json.dumps(event).encode()
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "X-Stygig-Inference-Id": str(event["inferenceId"]),
                    "X-Stygig-Attempt": str(attempt + 1),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if 200 <= response.status < 300:
                        return True
                    reason = f"HTTP {response.status}"
            except urllib.error.HTTPError as e:
                reason = f"HTTP {e.code}"
                e.close()
            except (urllib.error.URLError, OSError) as e:
                reason = str(e)
            log.warning(
                "webhook attempt %d/%d for %s failed: %s",
                attempt + 1,
                self.retries + 1,
                event["inferenceId"],
                reason,
            )
            if attempt < self.retries:
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        return False

    def publish(self, topic_arn: str, event: dict[str, Any]) -> bool:
        """Publish ``event`` to an SNS topic (boto3 retries on its own)."""
        try:
            import boto3

            boto3.client("sns").publish(
                TopicArn=topic_arn,
                Message=json.dumps(event),
                Subject=f"stygig job {event['status']}",
            )
        except Exception:
            log.warning("SNS publish to %s failed", topic_arn, exc_info=True)
            return False
        return True
