"""The bearer token a StyGig server may require, and how its clients find it.

A server started with ``--auth-token-file FILE`` (or ``$STYGIG_AUTH_TOKEN_FILE`` /
``$STYGIG_AUTH_TOKEN``) answers 401 to any request without ``Authorization: Bearer <token>``
except its health checks. StyGig's own clients (``stygig loadtest``, ``stygig jobs``,
``stygig invoke --url``) read the same environment variables, so one setting serves both sides.
"""

from __future__ import annotations

import os
from pathlib import Path

from stygig.errors import InvalidOptionsError

__all__ = ["bearer_headers", "load_token"]


def load_token(path: str | None = None) -> str | None:
    """The token from ``path``, else ``$STYGIG_AUTH_TOKEN_FILE``, else ``$STYGIG_AUTH_TOKEN``;
    ``None`` when none is set (no authentication)."""
    path = path or os.environ.get("STYGIG_AUTH_TOKEN_FILE")
    if path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidOptionsError(f"cannot read the auth token file: {e}") from None
        if not token:
            raise InvalidOptionsError("the auth token file is empty")
        return token
    return os.environ.get("STYGIG_AUTH_TOKEN", "").strip() or None


def bearer_headers() -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` when a token is configured, else ``{}``."""
    token = load_token()
    return {"Authorization": f"Bearer {token}"} if token else {}
