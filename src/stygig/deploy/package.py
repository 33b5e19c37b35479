"""``model.tar.gz`` in SageMaker's layout: the artifact's files at the root of the archive.

SageMaker unpacks the archive into ``/opt/ml/model``, where ``stygig serve`` looks for
``manifest.json``. Only an artifact that passes its own manifest check (format version, every
file's size and sha256, no file the manifest does not list, no path outside the folder) is
packed: a folder with stray files is refused, since the server would refuse it too. The archive is reproducible: sorted names, zero mtimes and owners.
"""

from __future__ import annotations

import gzip
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stygig.artifact import file_sha256, read_manifest, verify_files
from stygig.errors import StorageError
from stygig.storage import parse

__all__ = ["Package", "package_artifact", "upload"]


@dataclass(frozen=True)
class Package:
    """A written ``model.tar.gz``."""

    path: Path
    sha256: str
    bytes: int
    files: tuple[str, ...]


def package_artifact(artifact: str | Path, out: str | Path) -> Package:
    """Check the artifact against its manifest and pack it as ``out`` (a ``.tar.gz``)."""
    root = Path(artifact)
    manifest = read_manifest(root)
    verify_files(root, manifest)
    names = sorted({"manifest.json", *manifest.get("files", {})})
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    try:
        with (
            tmp.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in names:
                info = tar.gettarinfo(str(root / name), arcname=name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = 0o644
                with (root / name).open("rb") as handle:
                    tar.addfile(info, handle)
        tmp.replace(target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {target}: {e}") from e
    return Package(target, file_sha256(target), target.stat().st_size, tuple(names))


def upload(path: str | Path, uri: str, *, region: str | None = None) -> str:
    """Upload ``path`` to ``uri`` (``s3://bucket/key``, or a prefix ending in ``/``)."""
    from stygig.deploy.sagemaker import aws_client, translate

    loc = parse(uri)
    if loc.scheme != "s3":
        raise StorageError(f"--upload must be an s3:// URI, not {uri!r}", code="invalid_location")
    key = loc.key + Path(path).name if not loc.key or loc.key.endswith("/") else loc.key
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
    try:
        s3.upload_file(str(path), loc.bucket, key)
    except Exception as e:
        raise _storage(translate(e, f"upload to s3://{loc.bucket}/{key}")) from e
    return f"s3://{loc.bucket}/{key}"


def _storage(error: Exception) -> Exception:
    """Keep configuration errors (credentials, region) as they are; the rest are storage."""
    from stygig.errors import ConfigError

    if isinstance(error, ConfigError | StorageError):
        return error
    return StorageError(str(getattr(error, "message", error)))
