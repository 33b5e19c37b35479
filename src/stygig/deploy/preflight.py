"""Preflight of ``deploy sync | async | update``: refuse what AWS would accept and fail on later.

Cheapest first, each failure a clear error before anything is created:

* the image URI names an ECR image (``<account>.dkr.ecr.<region>.amazonaws.com/<repo>``,
  optionally ``:tag`` or ``@sha256:<digest>``) in the endpoint's region (SageMaker pulls only
  from its own region);
* the role is an IAM role ARN (``arn:aws:iam::<account>:role/<name>``);
* an asynchronous endpoint's result and failure prefixes are ``s3://<bucket>/...`` and its
  topics SNS topic ARNs in the endpoint's region; at most 1,000 invocations per instance
  (:func:`check_async_settings`; SageMaker takes such a config and fails each invocation later);
* the model archive exists in S3 (``HeadObject``) and is the packed artifact (:func:`check_archive`);
* no endpoint of that name exists yet, unless ``--update`` says to switch it in place.

How the archive is verified (``--verify-archive``):

``auto`` (default)
    An archive uploaded by ``stygig package --upload`` carries its sha256 as object metadata,
    and S3 keeps the SHA-256 checksum it verified on upload: when the two agree, the stored
    bytes are the archive that ``package`` built after checking every file against the
    artifact's manifest. One ``HeadObject``, nothing downloaded. An archive without that
    record (uploaded some other way), or whose checksum S3 cannot compare (a multipart
    upload), is verified in full when it is at most ``--verify-max-mb``, refused otherwise.
``full``
    The archive is streamed once (memory bounded by a read buffer): every member is hashed and
    compared with the ``manifest.json`` inside it (each listed file present with its size and
    sha256, nothing unlisted, no path outside the archive root), and the whole archive's
    sha256 with the upload record when there is one. The members are unpacked as they stream
    into a temporary folder (removed after; at most what the inflation bound lets through),
    and the artifact is loaded from it as the container will load it: files that each match
    their re-recorded checksums can still disagree with one another (60 items beside 131
    embeddings), which only a load finds.
``skip``
    Existence only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import io
import re
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from stygig.artifact import (
    MANIFEST_MAX_BYTES,
    check_file_entries,
    check_names,
    parse_manifest,
    verify_onnx,
)
from stygig.errors import (
    ArtifactError,
    ConfigError,
    InvalidOptionsError,
    NotFoundError,
    StygigError,
)

if TYPE_CHECKING:
    from stygig.deploy.sagemaker import AsyncSettings

__all__ = [
    "ArchiveCheck",
    "check_archive",
    "check_async_settings",
    "check_endpoint_free",
    "check_image_uri",
    "check_role_arn",
    "verify_stream",
]

VERIFY_MODES = ("auto", "full", "skip")
#: What an archive may inflate to, times its size (at least 1 MB): StyGig's artifacts are
#: float rows, JPEG thumbnails and model weights, which gzip shrinks by a few percent.
MAX_INFLATION = 20
#: An artifact holds a dozen or two files.
MAX_MEMBERS = 10_000
_ECR_IMAGE = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)"
    r"\.amazonaws\.com(?:\.cn)?/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})?"
)
_ROLE_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
# SageMaker's own pattern for a topic (every partition; FIFO topics end in ".fifo").
_SNS_ARN = re.compile(r"arn:aws[a-z-]*:sns:(?P<region>[a-z0-9-]*):\d{12}:[A-Za-z0-9_.-]{1,256}")
#: SageMaker's bound on ``MaxConcurrentInvocationsPerInstance``.
MAX_ASYNC_CONCURRENCY = 1000
_MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def check_image_uri(uri: str, region: str | None = None) -> None:
    """Refuse an image URI that is not an ECR image (in ``region``, when given)."""
    match = _ECR_IMAGE.fullmatch(uri)
    if match is None:
        raise InvalidOptionsError(
            f"--image-uri {uri[:200]!r} is not an ECR image: expected "
            "<account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@sha256:<digest>] "
            "(push the image built from docker/Dockerfile to ECR)",
            code="invalid_image_uri",
        )
    if region and match["region"] != region:
        raise InvalidOptionsError(
            f"--image-uri is in {match['region']}, the endpoint in {region}: SageMaker pulls "
            f"images from its own region only; push the image to ECR in {region}",
            code="invalid_image_uri",
        )


def check_role_arn(arn: str) -> None:
    """Refuse an execution role that is not an IAM role ARN."""
    if _ROLE_ARN.fullmatch(arn) is None:
        raise InvalidOptionsError(
            f"--role {arn[:200]!r} is not an IAM role ARN: expected "
            "arn:aws:iam::<account>:role/<name> (the SageMaker execution role)",
            code="invalid_role",
        )


def check_async_settings(settings: AsyncSettings, region: str | None = None) -> None:
    """Refuse an asynchronous endpoint's settings SageMaker would take and fail on later: a
    result or failure prefix that is not ``s3://<bucket>/...``, a topic that is not an SNS
    topic ARN (in ``region``, when given: SageMaker notifies topics of its own region), a
    concurrency outside 1..1,000."""
    from stygig import storage

    paths = {"--s3-output-path": settings.s3_output_path}
    if settings.s3_failure_path:
        paths["--s3-failure-path"] = settings.s3_failure_path
    for flag, uri in paths.items():
        if not uri.startswith("s3://"):
            raise InvalidOptionsError(
                f"{flag} {uri[:200]!r} is not an S3 prefix: expected s3://<bucket>/<prefix>",
                code="invalid_location",
            )
        try:
            storage.parse(uri)
        except StygigError as e:
            raise InvalidOptionsError(f"{flag}: {e}", code="invalid_location") from None
    topics = {
        "--sns-success-topic": settings.success_topic,
        "--sns-error-topic": settings.error_topic,
    }
    for flag, arn in topics.items():
        if arn is None:
            continue
        match = _SNS_ARN.fullmatch(arn)
        if match is None:
            raise InvalidOptionsError(
                f"{flag} {arn[:200]!r} is not an SNS topic ARN: expected "
                "arn:aws:sns:<region>:<account>:<topic>",
                code="invalid_topic",
            )
        if region and match["region"] != region:
            raise InvalidOptionsError(
                f"{flag} is in {match['region']}, the endpoint in {region}: SageMaker "
                "notifies topics of its own region",
                code="invalid_topic",
            )
    concurrent = settings.max_concurrent_per_instance
    if not 1 <= concurrent <= MAX_ASYNC_CONCURRENCY:
        raise InvalidOptionsError(
            f"--max-concurrent must be 1..{MAX_ASYNC_CONCURRENCY:,} invocations per instance, "
            f"not {concurrent}",
        )


@dataclass(frozen=True)
class ArchiveCheck:
    """What the preflight found out about the model archive."""

    uri: str
    bytes: int
    sha256: str | None
    how: str  # one line: how it was verified

    def describe(self) -> str:
        """The preflight's line about the archive."""
        return f"model {self.uri}: {self.bytes / 1e6:.2f} MB, {self.how}"


class _Hashing(io.RawIOBase):
    """A readable stream that hashes and counts what is read through it."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self.sha = hashlib.sha256()
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha.update(data)
        self.read_bytes += n
        return n

    def drain(self) -> None:
        while self.readinto(bytearray(_CHUNK)):
            pass


_INFLATES = f"inflates to more than {MAX_INFLATION} times its size: not a packed artifact"


class _Bounded:
    """A readable stream of at most ``budget`` bytes (``None``: any): past it, the archive is
    refused as a decompression bomb."""

    def __init__(self, inner: Any, budget: int | None, where: str) -> None:
        self._inner, self._budget, self._where = inner, budget, where
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._inner.read(n)
        self.read_bytes += len(data)
        if self._budget is not None and self.read_bytes > self._budget:
            raise _bad(self._where, _INFLATES, "archive_bad")
        return data


def _bad(where: str, why: str, code: str = "archive_mismatch") -> ArtifactError:
    return ArtifactError(f"model archive {where} {why}; repack it with `stygig package`", code=code)


def verify_stream(
    body: Any, where: str, *, size: int | None = None, unpack_to: Path | None = None
) -> str:
    """Verify a ``model.tar.gz`` read from ``body`` against the manifest inside; its sha256.

    One pass, nothing written but into ``unpack_to`` (a folder: each member is written there
    as it is hashed, for a load after): each member's size and sha256 are recorded as it streams past
    (the manifest sorts after most files), then compared with the manifest at the end. With
    the archive's ``size``, what it inflates to is bounded (:data:`MAX_INFLATION` times it, and
    :data:`MAX_MEMBERS` members): an artifact's files (floats, JPEGs, model weights) hardly
    compress, so a bomb is refused after reading that much, not after hours.
    """
    stream = _Hashing(body)
    seen: dict[str, tuple[int, str]] = {}
    raw_manifest: bytes | None = None
    budget = None if size is None else max(size, 1 << 20) * MAX_INFLATION
    try:
        # Inflated bytes are counted where gzip yields them: tar's own headers (a PAX header
        # of hundreds of MB is read whole before its member) count as much as files.
        gz = gzip.GzipFile(fileobj=io.BufferedReader(stream, _CHUNK), mode="rb")
        inflated = _Bounded(gz, budget, where)
        with tarfile.open(fileobj=cast(Any, inflated), mode="r|") as tar:
            for member in tar:
                name = member.name
                if len(seen) >= MAX_MEMBERS:
                    raise _bad(where, f"holds more than {MAX_MEMBERS:,} files", "archive_bad")
                if not member.isfile() or "/" in name or name in ("", ".", ".."):
                    raise _bad(where, f"holds {name[:100]!r}, not a plain file at its root")
                if member.issparse():  # tarfile makes its holes itself: no bound counts them
                    # (review, session 41: 127 bytes wrote 300 MB of zeros to the unpack folder)
                    raise _bad(where, f"holds {name[:100]!r} as a sparse file", "archive_bad")
                if budget is not None and member.size > budget - inflated.read_bytes:
                    raise _bad(where, _INFLATES, "archive_bad")  # refused before it is written
                if name in seen:
                    raise _bad(where, f"holds {name[:100]!r} twice")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file
                if name == _MANIFEST:
                    if member.size > MANIFEST_MAX_BYTES:
                        raise _bad(where, "has an oversized manifest.json")
                    raw_manifest = handle.read()
                    seen[name] = (len(raw_manifest), hashlib.sha256(raw_manifest).hexdigest())
                    if unpack_to is not None:
                        (unpack_to / name).write_bytes(raw_manifest)
                    continue
                sha, size = hashlib.sha256(), 0
                unpacked = (unpack_to / name).open("xb") if unpack_to else contextlib.nullcontext()
                with unpacked as out:
                    while chunk := handle.read(_CHUNK):
                        sha.update(chunk)
                        size += len(chunk)
                        if out is not None:
                            out.write(chunk)
                seen[name] = (size, sha.hexdigest())
        stream.drain()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise _bad(where, f"is not a readable .tar.gz ({type(e).__name__})", "archive_bad") from e
    if raw_manifest is None:
        raise _bad(where, "has no manifest.json listing file checksums", "archive_bad")
    try:
        # The container's own checks of a manifest (JSON object, a format version this stygig
        # reads, plain file names, typed checksums): what it would refuse at start is refused
        # here, before an endpoint is made.
        manifest = parse_manifest(raw_manifest)
        check_names(manifest)
        files = check_file_entries(manifest)
    except ArtifactError as e:
        raise _bad(
            where, f"is refused by the container's loader ({e.message})", "archive_bad"
        ) from None
    for name, meta in files.items():
        got = seen.get(name)
        if got is None:
            raise _bad(where, f"lacks {name[:100]!r}, which its manifest lists")
        if got != (meta["bytes"], meta["sha256"]):
            raise _bad(where, f"holds {name[:100]!r}, which does not match its checksum")
    extra = sorted(set(seen) - set(files) - {_MANIFEST})
    if extra:
        raise _bad(where, f"holds {extra[0][:100]!r}, which its manifest does not list")
    try:
        verify_onnx(manifest, files)
    except ArtifactError as e:
        raise _bad(where, f"is refused by the container's loader ({e.message})") from None
    return stream.sha.hexdigest()


def _head(s3: Any, bucket: str, key: str, uri: str) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    from stygig.deploy.sagemaker import translate

    try:
        head: dict[str, Any] = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            raise NotFoundError(
                f"model archive {uri} does not exist: upload it with "
                f"`stygig package --artifact DIR --upload {uri}`",
                code="model_not_found",
            ) from e
        if code in ("403", "AccessDenied", "Forbidden"):
            raise ConfigError(
                f"model archive {uri}: access denied (these credentials cannot read it, or "
                "it does not exist and they cannot list the bucket)",
                code="model_forbidden",
            ) from e
        raise translate(e, f"model archive {uri}") from e
    except BotoCoreError as e:
        raise translate(e, f"model archive {uri}") from e
    return head


def _s3_sha256(head: dict[str, Any]) -> str | None:
    """S3's SHA-256 of the whole object, hex; None when it keeps none or a composite one."""
    value = head.get("ChecksumSHA256")
    if not value or "-" in str(value) or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        return base64.b64decode(str(value), validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def check_archive(
    s3: Any,
    uri: str,
    *,
    verify: str = "auto",
    max_bytes: int = 2048 * 1024 * 1024,
    expect_sha256: str | None = None,
) -> ArchiveCheck:
    """The model archive exists and is the packed artifact (see the module's docstring).

    ``expect_sha256``: the archive must be this one (the pipeline's own package).
    """
    from stygig.deploy.package import META_SHA256
    from stygig.deploy.sagemaker import translate
    from stygig.storage import parse

    if verify not in VERIFY_MODES:
        raise InvalidOptionsError(f"--verify-archive must be one of {', '.join(VERIFY_MODES)}")
    if not uri.startswith("s3://"):
        raise InvalidOptionsError(f"--model-uri must be an s3:// URI, not {uri[:200]!r}")
    loc = parse(uri)
    if not loc.key or loc.key.endswith("/"):
        raise InvalidOptionsError(f"--model-uri {uri[:200]!r} names a prefix, not an object")
    head = _head(s3, loc.bucket, loc.key, uri)
    size = int(head.get("ContentLength", 0))
    recorded = (head.get("Metadata") or {}).get(META_SHA256)
    stored = _s3_sha256(head)
    if recorded and stored and recorded != stored:
        raise _bad(uri, "differs from what `stygig package --upload` recorded")
    if expect_sha256 and (recorded or stored) and expect_sha256 not in (recorded, stored):
        raise _bad(uri, "is not the archive just packed (another upload replaced it?)")
    if verify == "skip":
        return ArchiveCheck(uri, size, recorded, "exists (not verified: --verify-archive skip)")
    if verify == "auto" and recorded and stored:
        return ArchiveCheck(uri, size, recorded, "sha256 recorded at upload = S3's checksum")
    if verify == "auto" and size > max_bytes:
        raise ArtifactError(
            f"model archive {uri} ({size / 1e6:.0f} MB) carries no upload record S3 can "
            f"confirm, and verifying it means reading it whole (over --verify-max-mb "
            f"{max_bytes / 1e6:.0f}): upload it with `stygig package --upload`, raise the "
            "limit, or pass --verify-archive skip",
            code="archive_unverified",
        )
    try:
        body = s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
    except Exception as e:
        raise translate(e, f"model archive {uri}") from e
    with tempfile.TemporaryDirectory(prefix="stygig-archive-") as folder:
        try:
            sha = verify_stream(body, uri, size=size, unpack_to=Path(folder))
        except StygigError:
            raise
        except Exception as e:  # the connection dropped while streaming
            raise translate(e, f"model archive {uri}") from e
        _load(Path(folder), uri)
    if recorded and sha != recorded:
        raise _bad(uri, "differs from what `stygig package --upload` recorded")
    if expect_sha256 and sha != expect_sha256:
        raise _bad(uri, "is not the archive just packed (another upload replaced it?)")
    return ArchiveCheck(
        uri, size, sha, "read whole: every file matches the manifest inside, and it loads"
    )


def _load(folder: Path, where: str) -> None:
    """Load the unpacked artifact in ``folder`` as the container will (its checksums were
    compared while it streamed)."""
    from stygig.artifact import Artifact

    try:
        Artifact.load(folder, verify=False)
    except StygigError as e:
        message = e.message.replace(str(folder), "<archive>")  # never the temporary path
        raise _bad(
            where, f"is refused by the container's loader ({message})", "archive_bad"
        ) from None


def check_endpoint_free(sm: Any, name: str, *, update: bool) -> dict[str, Any] | None:
    """None when no endpoint is called ``name``; its description when ``update`` allows it.

    An existing endpoint without ``update`` is refused: ``CreateEndpoint`` on a taken name is
    an error at best, and a silent replacement of a live endpoint at worst.
    """
    from stygig.deploy.sagemaker import call

    try:
        endpoint = call(sm, "describe_endpoint", EndpointName=name)
    except NotFoundError:
        if update:
            raise NotFoundError(
                f"--update: there is no endpoint {name} to update; drop --update to create it",
                code="endpoint_not_found",
            ) from None
        return None
    if endpoint.get("EndpointStatus") == "Failed":
        # Neither --update nor deploy update can take a failed endpoint (they wait for it to
        # be InService, which it never will be): the advice sent people in a circle (review,
        # session 53).
        raise InvalidOptionsError(
            f"endpoint {name} failed ({str(endpoint.get('FailureReason') or '')[:200]}): "
            f"remove it with `stygig deploy delete --endpoint-name {name}`, then deploy again",
            code="endpoint_failed",
        )
    if not update:
        raise InvalidOptionsError(
            f"endpoint {name} already exists ({endpoint.get('EndpointStatus')}): pass --update "
            f"to switch it to this model in place, use `stygig deploy update --endpoint-name "
            f"{name} --model-uri ... --traffic 10` for a blue/green canary, or delete it first",
            code="endpoint_exists",
        )
    return endpoint
