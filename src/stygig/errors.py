"""One exception tree for StyGig, mapped to HTTP statuses and CLI exit codes at the boundary.

::

    StygigError                      500  exit 1   (never raised directly for client input)
    ├── InputError                   400  exit 2   a caller's request is wrong
    │   ├── InvalidImageError        400           not an image / corrupt / truncated
    │   ├── ImageTooLargeError       413           too many pixels or too many bytes
    │   │   └── PayloadTooLargeError 413           a request body over the server's limit
    │   ├── UnsupportedMediaError    415           a format or content type we do not read
    │   ├── NotAcceptableError       406           an Accept header that rules out JSON
    │   ├── InvalidOptionsError      422           options that fail validation
    │   ├── NotFoundError            404           unknown item id, unknown job
    │   ├── UnauthorizedError        401           a missing or wrong bearer token
    │   ├── RequestTimeoutError      408           a request body that arrives too slowly
    │   └── BatchError                    exit 2   batch input unreadable / output of another run
    ├── CatalogError                 exit 3        a catalogue file that cannot be read at all
    ├── ConfigError                  exit 3        a taxonomy/config file that is invalid
    ├── ArtifactError                exit 4        missing, newer-format or corrupt artifact
    ├── EncoderUnavailableError      exit 5        weights or runtime not reachable
    ├── StorageError                 exit 6        a location that cannot be read or written
    ├── ServerError                  exit 7        a StyGig server unreachable or answering 5xx
    ├── (batch.RunInProgressError)   exit 8        another batch run is writing that output now
    └── OverloadedError              503           queue full; retry later

Every error carries a stable machine-readable ``code`` (used as ``error.code`` in HTTP bodies).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")


class StygigError(Exception):
    """Base of every error StyGig raises on purpose."""

    http_status: int = 500
    exit_code: int = 1
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, object]:
        """The JSON error body: ``{"error": {"code": ..., "message": ...}}``."""
        return {"error": {"code": self.code, "message": self.message}}


class InputError(StygigError):
    """The caller's input is wrong; retrying the same input will fail the same way."""

    http_status = 400
    exit_code = 2
    code = "invalid_input"


class InvalidImageError(InputError):
    """Bytes that are not a decodable image (corrupt, truncated, not an image at all)."""

    code = "invalid_image"


class ImageTooLargeError(InputError):
    """An image whose byte size or pixel count exceeds the configured limit."""

    http_status = 413
    code = "image_too_large"


class UnsupportedMediaError(InputError):
    """An image format or content type StyGig does not accept."""

    http_status = 415
    code = "unsupported_media_type"


class InvalidOptionsError(InputError):
    """Recommendation options or a request body that fail validation."""

    http_status = 422
    code = "invalid_options"


class NotFoundError(InputError):
    """An item id, job id or other named thing that does not exist."""

    http_status = 404
    code = "not_found"


class UnauthorizedError(InputError):
    """A request without the server's bearer token (or with a wrong one)."""

    http_status = 401
    code = "unauthorized"


class ForbiddenError(InputError):
    """A request the server will not act on whoever sends it: a cross-site request."""

    http_status = 403
    code = "forbidden"


class CatalogFullError(InputError):
    """A catalogue change refused because the living catalogue reached one of its bounds
    (replaced rows kept until compaction, distinct labels, attribute names)."""

    http_status = 409
    code = "catalog_full"


class RequestTimeoutError(InputError):
    """A request body that did not arrive within the server's body-read limits."""

    http_status = 408
    code = "request_timeout"


class CatalogError(StygigError):
    """A catalogue file that cannot be read at all (bad rows are rejects, not errors)."""

    exit_code = 3
    code = "catalog_error"


class ConfigError(StygigError):
    """An invalid taxonomy or configuration file."""

    exit_code = 3
    code = "config_error"


class ArtifactError(StygigError):
    """An artifact that is missing, from a newer format version, or fails its checksums."""

    exit_code = 4
    code = "artifact_error"


class EncoderUnavailableError(StygigError):
    """Encoder weights or runtime that cannot be loaded on this machine."""

    exit_code = 5
    code = "encoder_unavailable"


class OverloadedError(StygigError):
    """The server's queue is full; the client should retry after a pause."""

    http_status = 503
    code = "overloaded"


class PayloadTooLargeError(ImageTooLargeError):
    """A request body over the server's byte limit."""

    code = "payload_too_large"


class NotAcceptableError(InputError):
    """An ``Accept`` header that rules out JSON."""

    http_status = 406
    code = "not_acceptable"


class BatchError(InputError):
    """A batch that cannot start: unreadable input, or an output from a different run."""

    code = "batch_error"


class StorageError(StygigError):
    """A location that cannot be read or written (permissions, network, bad URI)."""

    exit_code = 6
    code = "storage_error"


class ServerError(StygigError):
    """A StyGig server that cannot be reached, or answered with an error."""

    exit_code = 7
    code = "server_error"


def config_read_problem(error: BaseException) -> str:
    """Why a configuration file could not be read, without its contents: PyYAML's messages
    quote the lines around the error (a secret on them was printed: review, session 36), so
    only its problem and where it is are said."""
    problem, mark = getattr(error, "problem", None), getattr(error, "problem_mark", None)
    if isinstance(problem, str) and mark is not None:
        return f"{problem[:200]} at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    if isinstance(error, ValueError) and hasattr(error, "lineno"):  # json.JSONDecodeError
        return f"{getattr(error, 'msg', 'invalid JSON')} at line {error.lineno}"
    return f"not valid YAML ({type(error).__name__})"


def validation_summary(error: ValidationError) -> str:
    """``field: what is wrong; ...`` for a pydantic error (never the offending value)."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "the document"
        unknown = item["type"] in ("extra_forbidden", "unexpected_keyword_argument")
        message = "unknown key" if unknown else item["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def validate_config(adapter: TypeAdapter[T], data: Any, what: str) -> T:
    """``data`` validated by ``adapter``, or :class:`ConfigError` "``what``: field: problem; ..."
    (``what`` names the document and its file)."""
    from pydantic import ValidationError

    try:
        return adapter.validate_python(data)
    except ValidationError as e:
        raise ConfigError(f"{what}: {validation_summary(e)}") from None
