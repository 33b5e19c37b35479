"""The real-time HTTP server: SageMaker contract, REST API, micro-batching and metrics.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart, prometheus-client)::

    stygig serve --artifact build/demo/artifact          # port 8080, /ping, /invocations
    stygig loadtest --url http://127.0.0.1:8080 --images photos/ --concurrency 100

The core (``stygig.engine`` and below) never imports this package.
"""

from __future__ import annotations

from stygig.serving.app import ModelService, ServerConfig, create_app
from stygig.serving.batching import BatcherConfig, BatchResult, MicroBatcher

__all__ = [
    "BatchResult",
    "BatcherConfig",
    "MicroBatcher",
    "ModelService",
    "ServerConfig",
    "create_app",
]
