"""``model.tar.gz`` in SageMaker's layout: the artifact's files at the root of the archive.

SageMaker unpacks the archive into ``/opt/ml/model``, where ``stygig serve`` looks for
``manifest.json``. Only an artifact that passes its own manifest check (format version, every
file's size and sha256, no file the manifest does not list, no path outside the folder) is
packed: a folder with stray files is refused, since the server would refuse it too. The archive is reproducible: sorted names, zero mtimes and owners.

:func:`upload` records what the preflight of ``deploy`` checks cheaply: the archive's sha256
and the sha256 of the artifact's ``manifest.json`` as S3 object metadata (``stygig-sha256``,
``stygig-manifest-sha256``), and asks S3 to verify and keep the object's own SHA-256
checksum, so that ``HeadObject`` alone proves the stored bytes are the packed archive.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stygig.artifact import Artifact, file_sha256, read_manifest, verify_files
from stygig.errors import ArtifactError, InvalidOptionsError, StorageError
from stygig.storage import Location, check_s3_key, new_temp_file, parse

__all__ = ["META_MANIFEST_SHA256", "META_SHA256", "Package", "package_artifact", "upload"]

META_SHA256 = "stygig-sha256"
META_MANIFEST_SHA256 = "stygig-manifest-sha256"
_SINGLE_PUT_MAX = 5 * 1024**3 - 1  # one PUT up to 5 GiB: S3's checksum is the object's sha256


@dataclass(frozen=True)
class Package:
    """A written ``model.tar.gz``."""

    path: Path
    sha256: str
    bytes: int
    files: tuple[str, ...]
    manifest_sha256: str = ""


class _Hashing:
    """A regular file opened once (never through a link): what is read of it is hashed on the
    way; ``size`` is its size when opened."""

    def __init__(self, fd: int, size: int) -> None:
        self._handle = os.fdopen(fd, "rb")
        self.size = size
        self.sha = hashlib.sha256()
        self.bytes = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._handle.read(n)
        self.sha.update(data)
        self.bytes += len(data)
        return data

    def __enter__(self) -> _Hashing:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def _open_hashing(path: Path, name: str) -> _Hashing:
    """``path`` opened for :class:`_Hashing`: a file that became a link, something else than
    a regular file, or vanished since the check is :func:`_changed`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ArtifactError(
                f"artifact refused: {name!r} became a symbolic link while it was packed",
                code="artifact_symlink",
            ) from None
        raise _changed(name) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _changed(name)
    return _Hashing(fd, st.st_size)


def _regular_sha256(path: Path) -> str:
    """The sha256 of the regular file ``path``, read once (never through a link)."""
    with _open_hashing(path, path.name) as stream:
        while stream.read(1 << 20):
            pass
        return stream.sha.hexdigest()


def package_artifact(artifact: str | Path, out: str | Path) -> Package:
    """Check the artifact against its manifest and pack it as ``out`` (a ``.tar.gz``).

    Each file is opened once (never through a symbolic link), and what goes into the archive
    is hashed as it goes in and compared with the manifest: a file swapped or edited after
    the check is refused, not packed."""
    root = Path(artifact)
    target = Path(out)
    if not target.name or target.is_dir():  # "", ".", "/": a ValueError after the whole
        # artifact was verified and loaded (review, session 49)
        raise InvalidOptionsError(f"--out {str(out)[:200]!r}: name the archive file to write")
    if target.resolve().is_relative_to(root.resolve()):
        raise InvalidOptionsError(
            f"--out {target} is inside the artifact folder: the archive would be written among "
            "the files it packs; name a file outside it"
        )
    manifest = read_manifest(root)  # not found, a link, not JSON: said here first
    manifest_sha = _regular_sha256(root / "manifest.json")  # what was checked, to compare
    verify_files(root, manifest)
    # Loaded as the container will load it: files that match their (re-recorded) checksums
    # can still disagree with each other (60 items beside 131 embeddings), which only shows
    # once an endpoint has started.
    Artifact.load(root, verify=False)
    files: dict[str, Any] = manifest["files"]
    names = sorted({"manifest.json", *files})
    target.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own (two packs at once shared ".<name>.partial" and could mix their
    # bytes), and the bytes on disk before the rename (review, session 49).
    fd, tmp_name = new_temp_file(target.parent, f".{target.name}.", ".partial")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in names:
                stream = _open_hashing(root / name, name)
                with stream:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = stream.size, 0o644  # mtime, owners: 0, ""
                    try:
                        tar.addfile(info, stream)
                    except OSError:
                        if stream.bytes < stream.size:  # it shrank while it was read
                            raise _changed(name) from None
                        raise
                    digest = stream.sha.hexdigest()
                want = (
                    (stream.bytes, manifest_sha)
                    if name == "manifest.json"
                    else (files[name]["bytes"], files[name]["sha256"])
                )
                if (stream.bytes, digest) != want:
                    raise _changed(name)
            tar.close()
            gz.close()
            raw.flush()
            os.fsync(raw.fileno())
        tmp.replace(target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {target}: {e}") from e
    except ArtifactError:
        tmp.unlink(missing_ok=True)
        raise
    return Package(target, file_sha256(target), target.stat().st_size, tuple(names), manifest_sha)


def _changed(name: str) -> ArtifactError:
    return ArtifactError(
        f"artifact refused: {name!r} changed while it was packed (it no longer matches its "
        "checksum); pack it again once nothing writes to the folder",
        code="artifact_checksum_mismatch",
    )


def upload_target(uri: str, name: str) -> tuple[Location, str]:
    """Where an archive called ``name`` is uploaded: ``uri`` (an ``s3://`` URI) and the object
    key, ``uri``'s key or ``name`` under it when it is a prefix (empty or ending in ``/``);
    refused when S3 would refuse it. Checked before packing, and again by :func:`upload`."""
    loc = parse(uri)
    if loc.scheme != "s3":
        raise StorageError(f"--upload must be an s3:// URI, not {uri!r}", code="invalid_location")
    key = loc.key + name if not loc.key or loc.key.endswith("/") else loc.key
    check_s3_key(key)
    return loc, key


def upload(
    path: str | Path,
    uri: str,
    *,
    region: str | None = None,
    sha256: str | None = None,
    manifest_sha256: str | None = None,
) -> str:
    """Upload ``path`` to ``uri`` (``s3://bucket/key``, or a prefix ending in ``/``).

    The object carries the archive's ``sha256`` (computed when not given) and, when given,
    the manifest's, as metadata; S3 checks the upload against a SHA-256 checksum and keeps it.
    """
    from stygig.deploy.sagemaker import aws_client, translate

    loc, key = upload_target(uri, Path(path).name)
    s3: Any = aws_client("s3", region)
    try:
        s3.head_bucket(Bucket=loc.bucket)
    except Exception as e:
        code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(
                f"bucket {loc.bucket!r} does not exist (or is in another account): create it "
                f"with `aws s3 mb s3://{loc.bucket}` or name another",
                code="bucket_not_found",
            ) from e
        raise _storage(translate(e, f"upload to s3://{loc.bucket}")) from e
    from boto3.s3.transfer import TransferConfig  # boto3 is there: aws_client needed it

    try:
        metadata = {META_SHA256: sha256 or file_sha256(Path(path))}
        if manifest_sha256:
            metadata[META_MANIFEST_SHA256] = manifest_sha256
        s3.upload_file(
            str(path),
            loc.bucket,
            key,
            ExtraArgs={"Metadata": metadata, "ChecksumAlgorithm": "SHA256"},
            Config=TransferConfig(multipart_threshold=_SINGLE_PUT_MAX),
        )
    except Exception as e:
        raise _storage(translate(e, f"upload to s3://{loc.bucket}/{key}")) from e
    return f"s3://{loc.bucket}/{key}"


def _storage(error: Exception) -> Exception:
    """Keep configuration errors (credentials, region) as they are; the rest are storage."""
    from stygig.errors import ConfigError

    if isinstance(error, ConfigError | StorageError):
        return error
    return StorageError(str(getattr(error, "message", error)))
