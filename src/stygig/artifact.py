"""The versioned, self-describing artifact that a build writes and the recommender loads.

An artifact is one directory (packed as ``model.tar.gz`` for SageMaker)::

    manifest.json     format version, versions of stygig and its libraries, encoder, index,
                      counts, build statistics, and the sha256 + size of every file below
    embeddings.npy    float32 (n, dim), L2-normalised, row i = items.jsonl line i; loaded
                      memory-mapped (read-only) for an ``ivfpq`` index or from 1 GB
    items.jsonl       one canonical item per line, with its dominant colour
    index.faiss       the FAISS index (absent for the exact kind), or, when the index is split
                      by outfit slot (format 3), index-partitions.npy (each row's part) and
                      index-partN.faiss (part N's FAISS index; absent for exact parts)
    taxonomy.yaml     the taxonomy the build used (categories, compatibility, boost)
    whitening.npz     PCA whitening fitted on the catalogue (optional; queries get the same)
    rejects.csv       every catalogue row kept out, with its reason
    encoder.onnx      the encoder graph when its runtime is ONNX, so serving needs no torch
    thumbnails.bin    the shop's 256 px JPEG of every item, back to back (optional), and
    thumbnails.json   their offsets; see :mod:`stygig.thumbnails`
    compat.npz        the learned compatibility model (optional, format 2; see
                      :mod:`stygig.compat` and :func:`add_compat_model`)
    category_head.npz the category (and usage) heads fitted on the catalogue's labels
                      (optional; see :mod:`stygig.category_head`); an older reader loads the
                      artifact and ignores it

Loading checks the manifest first: a newer format version is refused with a message that says
what to do, and so is anything but exactly the listed files, each matching its size and sha256
(an ONNX encoder's file also matching ``onnx_sha256``). Every file name the manifest gives is a
plain name inside the folder and no file is a symbolic link, checked even when verification is
switched off (see :func:`check_paths` and :func:`verify_files`). Format 2 adds the optional
``compat`` manifest entry and ``compat.npz``; format-1 artifacts (no model) load unchanged.
Format 3 is written only for an
index split by outfit slot, so an older reader refuses it with that message instead of failing
to find ``index.faiss``; unsplit artifacts are still written as format 2.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import tokenize
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from stygig import __version__
from stygig.catalog import Item, Reject, Taxonomy, count_by_reason
from stygig.catalog.schema import shown
from stygig.category_head import CategoryHead, load_artifact_heads
from stygig.compat.model import COMPAT_FILE, CompatModel
from stygig.errors import ArtifactError, ConfigError, StygigError
from stygig.familiarity import nearest_profile
from stygig.index import (
    PartitionedIndex,
    VectorIndex,
    build_index,
    choose_kind,
    is_exhaustive,
    load_index,
)
from stygig.npzfile import npy_header
from stygig.rowfile import FileRows
from stygig.storage import new_file_mode, new_temp_file
from stygig.thumbnails import write_thumbnails
from stygig.whitening import Whitening

__all__ = [
    "FORMAT_VERSION",
    "MMAP_MIN_BYTES",
    "Artifact",
    "IndexBuilder",
    "add_compat_model",
    "check_paths",
    "check_replaceable",
    "encoder_pooling",
    "file_sha256",
    "library_versions",
    "read_manifest",
    "verify_files",
    "wants_mmap",
    "write_artifact",
]

# 2: optional learned compatibility model (compat.npz); 3: split index; 4: a GeM-pooled
# EfficientNet on the torch runtime (a reader before 4 would rebuild it average-pooled and
# embed queries unlike the rows: it must refuse instead; an ONNX graph holds its own pooling)
FORMAT_VERSION = 4
_UNSPLIT_FORMAT = 2  # what an artifact without a split index is written as
_SPLIT_FORMAT = 3
MANIFEST = "manifest.json"
#: The largest manifest read (a real one is a few kB; one file entry is about 150 bytes): its
#: JSON is parsed whole, and 64 MB of ``[0,0,...]`` is a gigabyte of Python objects.
MANIFEST_MAX_BYTES = 4 << 20
ONNX_FILE = "encoder.onnx"  # an ONNX encoder's graph when the manifest names no other file
_BAD_MANIFEST = "artifact_bad_manifest"
_REBUILD = "rebuild the artifact or restore it from its package"
_LIBRARIES = ("numpy", "faiss-cpu", "onnxruntime", "pillow", "torch", "transformers")

#: ``embeddings.npy`` at least this large is left on disk on load (read-only), whatever the
#: index kind; an ``ivfpq`` index (or split index with an ``ivfpq`` part) always leaves it. At
#: 10M 512-d items the file is 20 GB: only the rows a query touches are read (page cache).
MMAP_MIN_BYTES = 1 << 30

#: How :func:`write_artifact` makes the index: ``(vectors, kind, partitions, params, folder)``
#: -> the index, which is then saved into ``folder`` (the artifact's temporary folder, where a
#: builder may already have written files the index's ``save`` keeps, such as IVF-PQ rows).
IndexBuilder = Callable[[np.ndarray, str, list[str] | None, dict[str, Any], Path], VectorIndex]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact's contents (installed ones only)."""
    out = {"python": platform.python_version(), "stygig": __version__}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _write_rejects(path: Path, rejects: Iterable[Reject]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "id", "reason", "detail", "raw"])
        for r in rejects:
            writer.writerow(
                [r.row, _cell(r.id or ""), r.reason, _cell(r.detail), json.dumps(r.raw)]
            )


def _cell(text: str) -> str:
    """Catalogue text as a spreadsheet shows it, never as a formula it runs (rejects.csv is
    opened in one): a leading ``= + - @``, tab or carriage return gets a quote before it. And
    as a terminal shows it, never as a command: control characters (escape sequences that
    retitle or clear a terminal, NUL) and the marks that reorder text on screen (bidi
    overrides, line and paragraph separators) are written as ``\\uXXXX`` (review, session 36)."""
    text = shown(text)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


#: An artifact write's own folders beside its output: ``.<out>.stygig-tmp-<random>`` (the
#: artifact being written) and ``.<out>.stygig-old-<random>`` (the one it replaces, until it is
#: deleted). The writer holds a lock on each while it works (:func:`_held`); a later write of the
#: same output removes those no one holds (:func:`remove_dead_writes`).
_TEMP_TAG = ".stygig-tmp-"
_OLD_TAG = ".stygig-old-"
#: A folder younger than this is never removed: its writer may not hold its lock yet.
_DEAD_WRITE_GRACE_S = 60.0


@contextmanager
def _held(folder: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold ``folder``'s lock (``flock`` on the folder itself) while the block runs: the kernel
    drops it when the process ends, however it ends. Not ``wait``: :class:`BlockingIOError`
    when another holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def remove_dead_writes(out_dir: str | Path) -> int:
    """Remove the folders that writes of ``out_dir`` left when their process died (``kill -9``
    mid-write left a partial artifact as large as the real one, kept for ever: review, session
    41); how many. A folder is its writer's while the writer's lock on it holds, whichever
    process or container (same kernel) wrote it: only unlocked folders older than a minute go."""
    out = Path(out_dir)
    prefixes = (f".{out.name}{_TEMP_TAG}", f".{out.name}{_OLD_TAG}")
    removed = 0
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return 0
    cutoff = time.time() - _DEAD_WRITE_GRACE_S
    for entry in entries:
        if not entry.name.startswith(prefixes) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
            with _held(Path(entry.path)):  # held by its writer: BlockingIOError, left alone
                shutil.rmtree(entry.path)
            removed += 1
        except OSError:
            continue  # held, or gone meanwhile, or not ours to remove
    return removed


def check_replaceable(out_dir: str | Path) -> None:
    """Refuse an output folder that holds something other than an artifact: a build replaces
    what is at ``out_dir``, and a mistyped ``--out`` (the catalogue's own folder, a home
    directory) must not be deleted. Absent, empty, or an artifact (``manifest.json``): fine."""
    out = Path(out_dir)
    if not out.exists() and not out.is_symlink():
        return
    folder = out.is_dir() and not out.is_symlink()
    if folder and (not any(out.iterdir()) or _is_artifact(out)):
        return
    raise ArtifactError(
        f"{out} exists and is not a StyGig artifact (no StyGig {MANIFEST}); a build replaces "
        "its output folder, so choose a new or empty one, or remove it first"
    )


def _is_artifact(folder: Path) -> bool:
    """Whether ``folder``'s ``manifest.json`` is a StyGig artifact's (review, session 36: any
    file of that name passed, and a web app's folder was replaced by the build)."""
    manifest = folder / MANIFEST
    try:
        if manifest.stat().st_size > 64 << 20:  # (a link: read_manifest refuses it)
            return False
        found = read_manifest(folder)
    except (ArtifactError, OSError):
        return False
    return isinstance(found.get("files"), dict) and isinstance(found.get("encoder"), dict)


def _modes() -> tuple[int, int]:
    """The modes a new file and folder get under the process's umask."""
    file_mode = new_file_mode()
    return file_mode, file_mode | (file_mode & 0o444) >> 2  # folders: x wherever r


def write_artifact(
    out_dir: str | Path,
    *,
    items: list[Item],
    colors: list[dict[str, Any]],
    embeddings: np.ndarray,
    taxonomy: Taxonomy,
    encoder_info: dict[str, Any],
    rejects: list[Reject],
    index_kind: str = "auto",
    index_params: dict[str, Any] | None = None,
    build_info: dict[str, Any] | None = None,
    extra_files: dict[str, Path] | None = None,
    whitening: Whitening | None = None,
    thumbnails: list[bytes | None] | None = None,
    manifest_extra: dict[str, Any] | None = None,
    index_builder: IndexBuilder | None = None,
    requested_index_params: dict[str, Any] | None = None,
) -> Path:
    """Write an artifact atomically: into a temporary sibling, then renamed into place.

    Args:
        out_dir: the artifact directory; replaced if it exists.
        items, colors, embeddings: row-aligned item table, colour summaries and vectors.
        taxonomy: stored as ``taxonomy.yaml``.
        encoder_info: the encoder's ``describe()``.
        rejects: rows kept out of the build.
        index_kind: ``auto``, ``exact``, ``flat``, ``hnsw`` or ``ivf``.
        index_params: passed to the index; ``partition_by`` (``slot`` | ``none``) says whether
            to keep one index per outfit slot (default: for ``auto`` above ``FLAT_MAX_ITEMS``).
        build_info: statistics recorded under ``build`` in the manifest.
        extra_files: ``{name: source path}`` copied into the artifact (e.g. ``encoder.onnx``).
        whitening: the transform already applied to ``embeddings``; stored for the queries.
        thumbnails: row-aligned JPEG thumbnails (``None`` for an item without one); stored as
            ``thumbnails.bin`` + ``thumbnails.json``.
        manifest_extra: more manifest entries (compaction: ``version`` and ``catalog``, the
            parent version and the last change-log sequence folded in).
        index_builder: makes the index instead of :func:`stygig.index.build_index` (the Ray
            build trains and fills ``ivfpq`` indexes as cluster tasks); see :data:`IndexBuilder`.
        requested_index_params: what the operator asked of the index (``stygig build
            --nprobe``, ...), recorded as the manifest's ``index.requested`` (and
            ``index_kind`` as ``index.requested_kind``) for compaction to ask again at the new
            size; default ``index_params``.
    """
    out = Path(out_dir)
    if not (len(items) == len(colors) == len(embeddings)):
        raise ArtifactError(
            f"item table ({len(items)}), colours ({len(colors)}) and embeddings "
            f"({len(embeddings)}) must have the same length"
        )
    if len(items) == 0:
        raise ArtifactError("no valid items: nothing to build (see the rejects summary)")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writes(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{_TEMP_TAG}", dir=out.parent))
    held = ExitStack()  # the locks on this write's folders (remove_dead_writes)
    try:
        held.enter_context(_held(tmp))
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        np.save(tmp / "embeddings.npy", vectors)
        with (tmp / "items.jsonl").open("w", encoding="utf-8") as handle:
            for item, color in zip(items, colors, strict=True):
                handle.write(json.dumps({**item.to_dict(), "color": color}) + "\n")
        (tmp / "taxonomy.yaml").write_text(taxonomy.to_yaml(), encoding="utf-8")
        _write_rejects(tmp / "rejects.csv", rejects)
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / name)
        if whitening is not None:
            whitening.save(tmp / "whitening.npz")
        if thumbnails is not None:
            write_thumbnails(tmp, zip((i.id for i in items), thumbnails, strict=True))
        params = dict(index_params or {})
        requested = dict(params if requested_index_params is None else requested_index_params)
        partitions = _slot_partitions(items, taxonomy, index_kind, params.pop("partition_by", None))
        builder = index_builder or _build_index
        index = builder(vectors, index_kind, partitions, params, tmp)
        index.save(tmp)

        by_category: dict[str, int] = {}
        for item in items:
            by_category[item.category] = by_category.get(item.category, 0) + 1
        by_reason = count_by_reason(rejects)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = {
            "format_version": _format_version(index, encoder_info),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": library_versions(),
            "encoder": encoder_info,
            "whitening": whitening.describe() if whitening is not None else None,
            "index": {
                "kind": index.kind,
                "dim": index.dim,
                "params": index.params(),
                "requested": requested,
                "requested_kind": index_kind,
            },
            "counts": {
                "items": len(items),
                "rejects": len(rejects),
                "by_category": dict(sorted(by_category.items())),
                "rejects_by_reason": dict(sorted(by_reason.items())),
            },
            "build": build_info or {},
            # How near each item's nearest other item is: photos far beyond it are unlike
            # the catalogue (stygig.familiarity).
            "nearest_similarity": nearest_profile(
                vectors, None if whitening is None else whitening.scale
            ),
            **(manifest_extra or {}),
            "files": {
                name: {"sha256": file_sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
                for name in files
            },
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        # mkdtemp's folder is private (0700): the artifact gets the umask's modes instead, so
        # that one user can build it and another serve it.
        file_mode, folder_mode = _modes()
        for path in tmp.rglob("*"):
            path.chmod(folder_mode if path.is_dir() else file_mode)
        tmp.chmod(folder_mode)
        check_replaceable(out)  # here, just before it is replaced (builds check at their start)
        if out.exists():
            backup = out.with_name(f".{out.name}{_OLD_TAG}{os.urandom(4).hex()}")
            # the old artifact, held under its backup name (another write swapping it now
            # finishes first: the last write wins, as before)
            held.enter_context(_held(out, wait=True))
            if _exchange(tmp, out):  # one atomic swap: tmp now holds the old artifact
                shutil.rmtree(tmp, ignore_errors=True)
            else:  # no renameat2 here: two renames, a moment without the folder between
                out.rename(backup)
                tmp.rename(out)
                shutil.rmtree(backup, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        held.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    held.close()
    return out


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``);
    False where the system or file system cannot (nothing was changed). A process killed
    between the two renames of a replace left no artifact at its name (review, session 51: a
    compaction killed there left every server on that folder unable to start)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without it
        return False
    at_fdcwd, rename_exchange = -100, 2
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return bool(done == 0)


def _build_index(
    vectors: np.ndarray,
    kind: str,
    partitions: list[str] | None,
    params: dict[str, Any],
    folder: Path,
) -> VectorIndex:
    """The default :data:`IndexBuilder`: :func:`stygig.index.build_index` in this process."""
    return build_index(vectors, kind, partitions, "slot", **params)


def _slot_partitions(
    items: list[Item], taxonomy: Taxonomy, kind: str, partition_by: str | None
) -> list[str] | None:
    """Each item's outfit slot when the index is split by slot, else ``None``.

    ``partition_by``: ``"slot"`` or ``"none"``; unset, large catalogues (an approximate
    index: ``ivf``, or ``ivfpq`` from ``PQ_MIN_ITEMS``) are split so outfit candidates come
    from every slot (:class:`PartitionedIndex`).
    """
    if partition_by not in (None, "slot", "none"):
        raise ArtifactError(f"index partition_by must be 'slot' or 'none', not {partition_by!r}")
    split = partition_by == "slot" or (
        partition_by is None and kind == "auto" and choose_kind(len(items)) in ("ivf", "ivfpq")
    )
    return [taxonomy.slot_of(i.category) for i in items] if split else None


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check an artifact's manifest (format version), without loading the rest."""
    root = Path(path)
    file = root / MANIFEST
    if file.is_symlink():
        raise ArtifactError(
            f"artifact refused: {MANIFEST} is a symbolic link; an artifact holds its own files",
            code="artifact_symlink",
        )
    if not file.is_file():
        raise ArtifactError(f"{root} is not a StyGig artifact: {MANIFEST} not found")
    with file.open("rb") as handle:
        raw = handle.read(MANIFEST_MAX_BYTES + 1)
    return parse_manifest(raw)


def parse_manifest(raw: bytes) -> dict[str, Any]:
    """A manifest's bytes as the checked manifest (JSON object, a format version this stygig
    reads): :func:`read_manifest`'s checks, also for a manifest read from an archive."""
    if len(raw) > MANIFEST_MAX_BYTES:
        raise ArtifactError(
            f"artifact: {MANIFEST} is over {MANIFEST_MAX_BYTES >> 20} MiB", code=_BAD_MANIFEST
        )
    try:
        manifest: Any = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, too deep, huge numbers
        raise ArtifactError(
            f"artifact: {MANIFEST} is not valid JSON: {e}", code=_BAD_MANIFEST
        ) from e
    if not isinstance(manifest, dict):
        raise ArtifactError(f"artifact: {MANIFEST} is not a JSON object", code=_BAD_MANIFEST)
    version = manifest.get("format_version")
    if type(version) is not int or version < 1:  # true, -7 were taken (review, session 51)
        raise ArtifactError(
            f"artifact: {MANIFEST} has no integer 'format_version'", code=_BAD_MANIFEST
        )
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"artifact has format version {version}, but this stygig "
            f"({__version__}) reads up to version {FORMAT_VERSION}: upgrade stygig "
            "or rebuild the artifact with this version"
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise ArtifactError(f"artifact: {MANIFEST}: {problem}", code=_BAD_MANIFEST)
    return manifest


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What in the manifest's parts that loading reads is of the wrong kind (review, session
    51: an encoder given as text, a build record that is no object, an index kind in a list,
    a dimension in text, a zero standard deviation were tracebacks at load or at every photo
    query), or None. The message names the field, never its value."""
    encoder = manifest.get("encoder", {})  # a missing one: refused where it is read
    if not isinstance(encoder, dict):
        return "'encoder' is not an object"
    if "name" in encoder and not isinstance(encoder["name"], str):
        return "'encoder.name' is not text"
    dim = encoder.get("dim", 1)
    if type(dim) is not int or dim < 1:
        return "'encoder.dim' is not a whole number of 1 or more"
    for key in ("runtime", "quantization", "pooling"):  # onnx_file: check_names says
        if encoder.get(key) is not None and not isinstance(encoder[key], str):
            return f"'encoder.{key}' is not text"
    pre = encoder.get("preprocess")
    if pre is not None:
        if not isinstance(pre, dict):
            return "'encoder.preprocess' is not an object"
        size, mean, std = (
            pre.get("size", 224),
            pre.get("mean", [0, 0, 0]),
            pre.get("std", [1, 1, 1]),
        )
        if type(size) is not int or not 1 <= size <= 4096:
            return "'encoder.preprocess.size' is not a whole number of 1 to 4096"
        for name, values in (("mean", mean), ("std", std)):
            if not (isinstance(values, list) and len(values) == 3 and all(map(_finite, values))):
                return f"'encoder.preprocess.{name}' is not three finite numbers"
        if not all(v > 0 for v in std):
            return "'encoder.preprocess.std' has a value that is not above 0"
    for key in ("build", "index", "counts", "versions", "nearest_similarity"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            return f"'{key}' is not an object"
    for key in ("whitening", "compat", "category_head"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict | bool):
            return f"'{key}' is not an object"
    index = manifest.get("index") or {}
    if index.get("kind") is not None and not isinstance(index["kind"], str):
        return "'index.kind' is not text"
    if "dim" in index and type(index["dim"]) is not int:
        return "'index.dim' is not a whole number"
    if index.get("params") is not None and not isinstance(index["params"], dict):
        return "'index.params' is not an object"
    return None


def _named_files(manifest: dict[str, Any]) -> dict[str, object]:
    """Every file name the manifest names, keyed by where it names it (for messages)."""
    named: dict[str, object] = {}
    files = manifest.get("files")
    if isinstance(files, dict):
        named.update({f"'files' entry {i + 1}": name for i, name in enumerate(files)})
    encoder = manifest.get("encoder")
    if isinstance(encoder, dict) and encoder.get("onnx_file") is not None:
        named["encoder.onnx_file"] = encoder["onnx_file"]
    compat = manifest.get("compat")
    if isinstance(compat, dict) and compat.get("file") is not None:
        named["compat.file"] = compat["file"]
    return named


def check_names(manifest: dict[str, Any]) -> None:
    """Every name in the manifest is a plain file name (no folders, ``..`` or absolute
    paths): ``artifact_unsafe_path`` otherwise."""
    for where, name in _named_files(manifest).items():
        # An absolute path always holds a separator, so the separators cover it.
        if (
            not isinstance(name, str)
            or name in ("", ".", "..")
            or any(c in name for c in ("/", "\\", "\0"))
        ):
            # The value is not echoed: it is the artifact author's, and may be a server path.
            raise ArtifactError(
                f"artifact refused: {where} in {MANIFEST} is not a plain file name inside "
                "the artifact (no folders, '..' or absolute paths)",
                code="artifact_unsafe_path",
            )


def check_file_entries(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``files``: a non-empty map of names to a ``sha256`` string and a
    ``bytes`` integer (not a boolean) each."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(
            f"artifact refused: {MANIFEST} lists no file checksums, so nothing could be "
            f"verified ({_REBUILD})",
            code="artifact_no_checksums",
        )
    for name, meta in files.items():
        if not (
            isinstance(meta, dict)
            and isinstance(meta.get("sha256"), str)
            and isinstance(meta.get("bytes"), int)
            and not isinstance(meta.get("bytes"), bool)
        ):
            raise ArtifactError(
                f"artifact refused: the {MANIFEST} entry of {name!r} needs a 'sha256' string "
                "and a 'bytes' integer",
                code=_BAD_MANIFEST,
            )
    return files


def check_paths(path: str | Path, manifest: dict[str, Any]) -> list[Path]:
    """Confinement: every name in the manifest is a plain file name, and nothing is a link.

    A manifest names files only directly inside the artifact: absolute paths, separators and
    ``..`` are refused, as is a symbolic link anywhere in the folder (it could point anywhere).
    This is not a checksum: loading runs it even when verification is switched off.

    Returns:
        The folder's entries, sorted (so :func:`verify_files` need not list it again).

    Raises:
        ArtifactError: ``artifact_unsafe_path`` or ``artifact_symlink``.
    """
    check_names(manifest)
    entries = sorted(Path(path).iterdir())
    for entry in entries:
        if entry.is_symlink():
            raise ArtifactError(
                f"artifact refused: {entry.name!r} is a symbolic link; an artifact holds "
                f"its own files ({_REBUILD})",
                code="artifact_symlink",
            )
    return entries


def verify_files(path: str | Path, manifest: dict[str, Any]) -> None:
    """Integrity: the artifact holds exactly the files its manifest lists, each unchanged.

    Checks, cheapest first: :func:`check_paths`; a non-empty checksum list; no file in the
    folder that is not listed (other than the manifest); every listed file present with its
    recorded size and sha256; and, for an ONNX encoder, the manifest's ``onnx_sha256`` equal to
    that file's verified checksum.

    Raises:
        ArtifactError: with a ``code`` saying which check failed; the message names the file
            relative to the artifact.
    """
    root = Path(path)
    entries = check_paths(root, manifest)
    files = check_file_entries(manifest)
    for entry in entries:
        if entry.name != MANIFEST and entry.name not in files:
            kind = "file" if entry.is_file() else "entry"
            raise ArtifactError(
                f"artifact refused: {kind} {entry.name!r} is not listed in {MANIFEST} "
                f"(every file must be listed and verified); remove it or {_REBUILD}",
                code="artifact_unlisted_file",
            )
    for name, meta in files.items():
        file = root / name
        if not file.is_file():
            raise ArtifactError(
                f"artifact is incomplete: {name!r} is missing ({_REBUILD})",
                code="artifact_file_missing",
            )
        if file.stat().st_size != meta["bytes"] or file_sha256(file) != meta["sha256"]:
            raise ArtifactError(
                f"artifact refused: {name!r} does not match its checksum in {MANIFEST} "
                f"(corrupted or edited); {_REBUILD}",
                code="artifact_checksum_mismatch",
            )
    verify_onnx(manifest, files)


def verify_onnx(manifest: dict[str, Any], files: dict[str, Any]) -> None:
    """An ONNX encoder's file is listed and its ``onnx_sha256`` is that file's checksum."""
    encoder = manifest.get("encoder")
    if not isinstance(encoder, dict) or encoder.get("runtime") != "onnx":
        return
    name = encoder.get("onnx_file") or ONNX_FILE
    if name not in files:
        raise ArtifactError(
            f"artifact refused: the encoder's ONNX file is not listed in {MANIFEST} ({_REBUILD})",
            code="artifact_file_missing",
        )
    # The listed checksum was just verified against the file: comparing with it avoids hashing
    # a model of hundreds of megabytes twice.
    if encoder.get("onnx_sha256") != files[name]["sha256"]:
        raise ArtifactError(
            f"artifact refused: encoder.onnx_sha256 in {MANIFEST} does not match {name!r} "
            f"(a swapped or edited model); {_REBUILD}",
            code="artifact_onnx_mismatch",
        )


def wants_mmap(path: str | Path, manifest: dict[str, Any]) -> bool:
    """Whether ``embeddings.npy`` is loaded memory-mapped: the index (or any part of a split
    one) is ``ivfpq`` (a catalogue of millions), or the file holds :data:`MMAP_MIN_BYTES` or
    more. Reads the manifest and the file's size only."""
    meta = manifest.get("index")
    kinds: set[object] = set()
    if isinstance(meta, dict):
        kinds.add(meta.get("kind"))
        params = meta.get("params")
        parts = params.get("parts") if isinstance(params, dict) else None
        if isinstance(parts, list):
            kinds.update(p.get("kind") for p in parts if isinstance(p, dict))
    if "ivfpq" in kinds:
        return True
    try:
        return (Path(path) / "embeddings.npy").stat().st_size >= MMAP_MIN_BYTES
    except OSError:
        return False  # np.load says what is wrong with it


def _check_rows(
    items: Sequence[Item],
    colors: Sequence[Any],
    taxonomy: Taxonomy,
    embeddings: np.ndarray | None,
) -> None:
    """What every request reads of a row, checked once at load (review, session 51: a category
    the taxonomy lacks, a NaN or out-of-range colour, a NaN or unnormalised embedding loaded,
    then failed every request naming the item, or answered similarities of 2e31): the row is
    named, never its contents. ``embeddings``: the rows in memory (None: left on disk, read by
    requests as they are, as an index over them was built)."""
    known = set(taxonomy.categories)
    for n, (item, color) in enumerate(zip(items, colors, strict=True), start=1):
        if item.category not in known:
            raise ArtifactError(
                f"artifact cannot be read: 'items.jsonl': row {n}'s category is not one of "
                "taxonomy.yaml's"
            )
        if not _color_ok(color):
            raise ArtifactError(
                f"artifact cannot be read: 'items.jsonl': row {n}'s colour is not a colour "
                "summary (rgb of three whole numbers 0-255, a palette of them with shares)"
            )
    if embeddings is not None and len(embeddings):
        norms = np.linalg.norm(np.asarray(embeddings, np.float32), axis=1)
        bad = np.flatnonzero(~(np.abs(norms - 1.0) <= 1e-2))  # NaN fails too
        if len(bad):
            raise ArtifactError(
                f"artifact cannot be read: 'embeddings.npy': row {int(bad[0]) + 1} is not a "
                "finite unit vector (every row is L2-normalised when built)"
            )


def _rgb_ok(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and all(type(v) is int and 0 <= v <= 255 for v in value)
    )


def _color_ok(color: Any) -> bool:
    """A colour summary as the build writes it (:meth:`stygig.color.ColorSummary.to_dict`),
    or nothing (``{}``: an item without one)."""
    if not isinstance(color, dict):
        return False
    if "rgb" in color and not _rgb_ok(color["rgb"]):
        return False
    hsl = color.get("hsl")
    if hsl is not None and not (
        isinstance(hsl, list)
        and len(hsl) == 3
        and all(type(v) in (int, float) and math.isfinite(v) for v in hsl)
    ):
        return False
    palette = color.get("palette", [])
    return isinstance(palette, list) and all(
        isinstance(p, dict)
        and _rgb_ok(p.get("rgb"))
        and type(p.get("share")) in (int, float)
        and 0.0 <= p["share"] <= 1.0
        for p in palette
    )


@contextmanager
def _reading(name: str) -> Iterator[None]:
    """Say a file of the artifact that cannot be read as one :class:`ArtifactError` naming it,
    whatever its reader raised on a malformed or tampered file (a missing key, a wrong type, a
    header that claims petabytes), never a traceback."""
    try:
        yield
    except ConfigError as e:  # a tampered taxonomy.yaml is the artifact's fault: exit 4, not 3
        raise ArtifactError(f"artifact cannot be read: {name!r}: {e.message}"[:500]) from e
    except StygigError:
        raise
    except OSError as e:
        raise ArtifactError(f"artifact cannot be read: {name!r}: {e.strerror or e}") from e
    except (
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        RecursionError,
        EOFError,
        ArithmeticError,  # a number past float's range: 1e400 (review, session 51)
        SyntaxError,  # a .npy header that is not a literal
        tokenize.TokenError,  # ... or not even tokens (an unclosed bracket)
        zipfile.BadZipFile,  # a truncated .npz
    ) as e:
        raise ArtifactError(
            f"artifact cannot be read: {name!r}: {type(e).__name__}: {e}"[:500]
        ) from e
    except MemoryError as e:  # a size no real artifact of this machine has
        raise ArtifactError(
            f"artifact cannot be read: {name!r}: it asks for more memory than there is "
            "(a corrupt or tampered size, or an artifact too large for this machine)"
        ) from e


def check_npy(path: Path) -> None:
    """Refuse a ``.npy`` file whose header does not describe exactly the bytes that follow
    (a 2-D float array): truncated, padded, or claiming more rows than it holds. Reads the
    header only."""
    with open(path, "rb") as f:
        shape, dtype, offset = npy_header(f)
        size = os.fstat(f.fileno()).st_size
    if len(shape) != 2 or dtype.kind != "f":
        raise ArtifactError(f"artifact: {path.name} is not a 2-D float array ({dtype}, {shape})")
    expected = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size != expected:
        raise ArtifactError(
            f"artifact: {path.name} holds {size - offset} bytes of data but its header says "
            f"{shape} {dtype} ({expected - offset} bytes)"
        )


@dataclass
class Artifact:
    """A loaded artifact: items, colours, embeddings, index, taxonomy and manifest."""

    path: Path
    manifest: dict[str, Any]
    items: Sequence[Item]  # a list, or stygig.rows.Rows once the catalogue changed
    colors: Sequence[dict[str, Any]]
    embeddings: np.ndarray  # or rows left on disk: stygig.rowfile.FileRows, rows.StackedRows
    index: VectorIndex
    taxonomy: Taxonomy
    whitening: Whitening | None = None
    positions: Mapping[str, int] = field(default_factory=dict)
    compat: CompatModel | None = None
    heads: dict[str, CategoryHead] = field(default_factory=dict)  # field -> its category head

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True, mmap: bool | None = None) -> Artifact:
        """Load an artifact directory.

        ``verify`` runs :func:`verify_files` first (every file listed and unchanged, hashed in
        1 MB blocks, never held whole); without it, :func:`check_paths` still runs, so no file
        outside the folder is ever read. ``mmap``: leave ``embeddings.npy`` on disk instead of
        reading it into memory; unset, :func:`wants_mmap` decides (an ``ivfpq`` index, or a
        file of :data:`MMAP_MIN_BYTES` or more). Its rows are then read with ``pread`` as
        asked (:class:`~stygig.rowfile.FileRows`), or through a read-only memory map when the
        index is exhaustive (it reads every row per query). Either is read-only: code that
        changes the catalogue builds new arrays (as :mod:`stygig.snapshot` does).
        """
        root = Path(path)
        manifest = read_manifest(root)
        if isinstance(manifest.get("encoder"), dict):
            encoder_pooling(manifest["encoder"])  # a record no reader knows refuses at load
        if verify:
            verify_files(root, manifest)
        else:
            check_paths(root, manifest)
        if mmap is None:
            mmap = wants_mmap(root, manifest)
        with _reading("embeddings.npy"):
            check_npy(root / "embeddings.npy")
            embeddings = np.load(root / "embeddings.npy", mmap_mode="r" if mmap else None)
        with _reading("items.jsonl"):
            rows = [
                json.loads(line)
                for line in (root / "items.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
            items = [Item.from_dict(r) for r in rows]
            colors = [r.get("color") or {} for r in rows]
        positions: dict[str, int] = {}
        for i, item in enumerate(items):
            first = positions.setdefault(item.id, i)
            if first != i:  # one id, two rows: the first would be unreachable (review, s. 41)
                raise ArtifactError(
                    f"artifact cannot be read: 'items.jsonl': id {item.id[:100]!r} on rows "
                    f"{first + 1} and {i + 1}"
                )
        with _reading("taxonomy.yaml"):
            taxonomy = Taxonomy.load(root / "taxonomy.yaml", origin="taxonomy.yaml")
        _check_rows(items, colors, taxonomy, embeddings if not mmap else None)
        with _reading("whitening.npz"):
            whitening = (
                Whitening.load(root / "whitening.npz") if manifest.get("whitening") else None
            )
        with _reading(COMPAT_FILE):
            compat = CompatModel.load(root / COMPAT_FILE) if manifest.get("compat") else None
        with _reading("the category heads"):
            heads = load_artifact_heads(
                root, manifest, dim=int(embeddings.shape[1]), whitening=whitening
            )
        if len(rows) != len(embeddings):
            raise ArtifactError(f"artifact: {len(rows)} items but {len(embeddings)} embeddings")
        # What a photo's vector will be: the encoder's width, or the whitening's (review,
        # session 51: a manifest without its whitening loaded, then every photo query failed).
        encoder_dim = manifest.get("encoder", {}).get("dim")
        width = whitening.projection.shape[1] if whitening is not None else encoder_dim
        if whitening is not None and encoder_dim is not None and len(whitening.mean) != encoder_dim:
            raise ArtifactError(
                f"artifact cannot be read: 'whitening.npz' reads {len(whitening.mean)}-d vectors, "
                f"the encoder's are {encoder_dim}-d"
            )
        if width is not None and width != embeddings.shape[1]:
            raise ArtifactError(
                f"artifact cannot be read: a photo's vector is {width}-d "
                f"({'whitened' if whitening is not None else 'the encoder'}'s), the catalogue's "
                f"rows are {embeddings.shape[1]}-d"
            )
        if compat is not None and compat.input_dim != embeddings.shape[1]:
            raise ArtifactError(
                f"artifact cannot be read: {COMPAT_FILE!r} reads {compat.input_dim}-d embeddings, "
                f"the catalogue's are {embeddings.shape[1]}-d"
            )
        meta = manifest.get("index")
        meta = meta if isinstance(meta, dict) else {}
        with _reading("the index"):
            index = load_index(root, meta.get("kind", "exact"), embeddings, meta.get("params"))
        if "dim" in meta and meta["dim"] != index.dim:  # (review, session 41)
            raise ArtifactError(
                f"artifact cannot be read: the manifest's index is {str(meta['dim'])[:20]}-d, "
                f"the embeddings and index are {index.dim}-d"
            )
        if mmap and not is_exhaustive(index):
            # Requests read a few hundred rows each; through the map they would stay
            # resident (all 20 GB at 10M items): read them with pread instead. An exhaustive
            # index reads every row per query, so the map stays.
            try:
                embeddings = FileRows(root / "embeddings.npy")
            except OSError as e:
                raise ArtifactError(
                    f"artifact cannot be read: 'embeddings.npy': {e.strerror}"
                ) from e
        return cls(
            path=root,
            manifest=manifest,
            items=items,
            colors=colors,
            embeddings=embeddings,
            index=index,
            taxonomy=taxonomy,
            whitening=whitening,
            positions=positions,
            compat=compat,
            heads=heads,
        )

    def summary(self) -> dict[str, Any]:
        """Manifest essentials for ``stygig inspect``."""
        m = self.manifest
        return {
            "path": str(self.path),
            "format_version": m["format_version"],
            "created_at": m.get("created_at"),
            "encoder": {
                **{k: m["encoder"].get(k) for k in ("name", "dim", "runtime", "quantization")},
                "pooling": encoder_pooling(m["encoder"]),
                "pooling_recorded": "pooling" in m["encoder"],
            },
            "whitening": m.get("whitening"),
            "index": m.get("index"),
            "counts": m.get("counts"),
            "build": m.get("build"),
            "compat": m.get("compat"),
            "category_head": m.get("category_head"),
        }


def add_compat_model(path: str | Path, model: CompatModel, info: dict[str, Any]) -> Path:
    """Add (or replace) the learned compatibility model of the artifact at ``path``:
    ``compat.npz``, a ``compat`` entry (``info``) and format version 2 (:func:`add_file`)."""
    entry = {"file": COMPAT_FILE, **info}
    return add_file(path, COMPAT_FILE, model.save, "compat", entry, format_version=2)


def add_file(
    path: str | Path,
    name: str,
    write: Callable[[Path], Any],
    key: str,
    entry: dict[str, Any],
    *,
    format_version: int | None = None,
) -> Path:
    """Add (or replace) the file ``name`` of the built artifact at ``path``.

    ``write(partial)`` writes it beside its place, and a rename puts it there; then the
    manifest is rewritten atomically (temporary file + rename) with ``key`` -> ``entry``, the
    file's sha256 and size (which :meth:`Artifact.load` verifies) and, when given, at least
    ``format_version``. A crash before the manifest's rename leaves the old manifest, which
    does not list the new file.
    """
    root = Path(path)
    manifest = read_manifest(root)
    target = root / name
    partial = root / f".{name}.{os.getpid()}.tmp"
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    if format_version is not None:
        manifest["format_version"] = max(int(manifest["format_version"]), format_version)
    manifest[key] = entry
    files = dict(manifest.get("files", {}))
    files[name] = {"sha256": file_sha256(target), "bytes": target.stat().st_size}
    manifest["files"] = dict(sorted(files.items()))
    fd, tmp_name = new_temp_file(root, f".{MANIFEST}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp_name, root / MANIFEST)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def encoder_pooling(encoder: Mapping[str, Any]) -> str | None:
    """How a manifest's ``encoder`` record says its vectors were pooled: a name of
    :data:`~stygig.encoders.efficientnet.POOLINGS` for an EfficientNet, ``avg`` when the record
    predates the field, ``None`` for encoders without the choice.

    Raises:
        ArtifactError: the field holds anything else.
    """
    from stygig.encoders.efficientnet import POOLINGS, is_efficientnet

    if not is_efficientnet(str(encoder.get("name", ""))):
        return None
    if "pooling" not in encoder:
        return "avg"  # built before the record existed
    value = encoder["pooling"]
    if not isinstance(value, str) or value not in POOLINGS:
        raise ArtifactError(
            f"artifact: {MANIFEST}'s encoder.pooling is {repr(value)[:40]}, not one of "
            f"{', '.join(POOLINGS)}: {_REBUILD}",
            code=_BAD_MANIFEST,
        )
    return value


def _format_version(index: Any, encoder: Mapping[str, Any]) -> int:
    """The oldest format that reads this artifact right (:data:`FORMAT_VERSION`'s history)."""
    version = _SPLIT_FORMAT if isinstance(index, PartitionedIndex) else _UNSPLIT_FORMAT
    if encoder.get("runtime") == "torch" and encoder_pooling(encoder) not in (None, "avg"):
        version = FORMAT_VERSION
    return version
