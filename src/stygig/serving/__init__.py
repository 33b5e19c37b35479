"""The real-time HTTP server: SageMaker contract, REST API, micro-batching and metrics.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart, prometheus-client)::

    stygig serve --artifact build/demo/artifact          # port 8080, /ping, /invocations
    stygig loadtest --url http://127.0.0.1:8080 --images photos/ --concurrency 100

The core (``stygig.engine`` and below) never imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stygig._exports import lazy_getattr

# Imported on first use: ``stygig serve``'s flags (serving.command) must register in a CLI that
# runs without FastAPI installed (``stygig build``, ``stygig inspect``).
_EXPORTS = {
    "BatchResult": "stygig.serving.batching",
    "BatcherConfig": "stygig.serving.batching",
    "MicroBatcher": "stygig.serving.batching",
    "ModelService": "stygig.serving.app",
    "ServerConfig": "stygig.serving.app",
    "create_app": "stygig.serving.app",
}

__all__ = [
    "BatchResult",
    "BatcherConfig",
    "MicroBatcher",
    "ModelService",
    "ServerConfig",
    "create_app",
]

if TYPE_CHECKING:
    from stygig.serving.app import ModelService, ServerConfig, create_app
    from stygig.serving.batching import BatcherConfig, BatchResult, MicroBatcher


__getattr__ = lazy_getattr(__name__, _EXPORTS)
