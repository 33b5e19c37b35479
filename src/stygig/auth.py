"""The bearer token a StyGig server may require, and how its clients find it.

A server started with ``--auth-token-file FILE`` (or ``$STYGIG_AUTH_TOKEN_FILE`` /
``$STYGIG_AUTH_TOKEN``) answers 401 to any request without ``Authorization: Bearer <token>``
except its public routes (:data:`stygig.serving.app.PUBLIC_PATHS`: the health checks, the
page and its files). StyGig's own clients (``stygig loadtest``, ``stygig jobs``,
``stygig invoke --url``) read the same environment variables, so one setting serves both sides.
"""

from __future__ import annotations

import os
from pathlib import Path

from stygig.errors import InvalidOptionsError

__all__ = ["bearer_headers", "load_token"]


def load_token(path: str | None = None) -> str | None:
    """The token from ``path``, else ``$STYGIG_AUTH_TOKEN_FILE``, else ``$STYGIG_AUTH_TOKEN``;
    ``None`` when none is set (no authentication).

    A setting that is given but empty (``--auth-token-file ""``, an empty
    ``$STYGIG_AUTH_TOKEN_FILE``, ``$STYGIG_AUTH_TOKEN`` of white space) is an error, as an empty
    token file is: a secret that did not arrive (``STYGIG_AUTH_TOKEN="$(cat missing)"``, an
    unset template variable) served every route without a token, without a word (review,
    session 53)."""
    where = "--auth-token-file"
    if path is None:
        path, where = os.environ.get("STYGIG_AUTH_TOKEN_FILE"), "$STYGIG_AUTH_TOKEN_FILE"
    if path is not None:
        if not path.strip():
            raise InvalidOptionsError(f"{where} is set but empty: {_UNSET}")
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidOptionsError(f"cannot read the auth token file: {e}") from None
        if not token:
            raise InvalidOptionsError("the auth token file is empty")
        return token
    value = os.environ.get("STYGIG_AUTH_TOKEN")
    if value is None:
        return None
    if not value.strip():
        raise InvalidOptionsError(f"$STYGIG_AUTH_TOKEN is set but empty: {_UNSET}")
    return value.strip()


_UNSET = "give the token, or unset it to serve (and call) without one"


def bearer_headers() -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` when a token is configured, else ``{}``."""
    token = load_token()
    return {"Authorization": f"Bearer {token}"} if token else {}
