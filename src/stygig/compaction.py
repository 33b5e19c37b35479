"""Compaction: fold an artifact's change log into the next artifact version.

The new artifact holds the catalogue as the log left it (removed and replaced rows gone, new
items in), with its index built again for its size (IVF lists retrained: ``nlist`` follows the
new count), fresh checksums, and a manifest that says where it came from::

    "version": "<new version>",
    "catalog": {"parent": "<the artifact's version>", "last_sequence": N}

A server that loads it applies only the log's records after ``N``. The encoder, whitening,
taxonomy, learned compatibility model and category heads are the parent's, carried over with
fresh checksums; no photo is decoded or encoded again (the log holds each added item's vector,
colour and thumbnail). Nothing is refitted: the category heads (:mod:`stygig.category_head`)
were fitted on the catalogue the build saw, and items added while serving, or folded in here,
never refit them (their labels still count in the neighbour vote the heads are merged with);
a new build refits them.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stygig.artifact import ONNX_FILE, Artifact
from stygig.artifact import write_artifact as _write
from stygig.catalog.changelog import ChangeLog
from stygig.category_head import HEAD_FILE, head_entry, save_heads
from stygig.compat.model import COMPAT_FILE
from stygig.errors import ArtifactError
from stygig.snapshot import CatalogSnapshot, ancestors, lineage_root, replay_batches, snapshot_of
from stygig.thumbnails import ItemImages

__all__ = ["compact", "replay"]


def replay(artifact: Artifact, changelog: ChangeLog) -> tuple[CatalogSnapshot, list[int]]:
    """The catalogue of ``artifact`` with every record of ``changelog`` after the sequence the
    artifact already folded in (no encoder needed: records carry their vectors), and the
    sequences of records skipped because they no longer apply: replayed as a server replays
    them (:func:`~stygig.snapshot.replay_batches`), so the new version holds exactly what the
    servers following the log serve."""
    snap = snapshot_of(  # no request is answered here: no int8 scan to make
        artifact,
        encoder=str(artifact.manifest["encoder"]["name"]),
        compat_mode="rules",
        scan="float32",
    )
    skipped: list[int] = []
    for after, _, missed in replay_batches(snap, changelog):
        snap = after
        skipped += [sequence for sequence, _ in missed]
    return snap, skipped


def compact(artifact_dir: str | Path, changelog: ChangeLog, out_dir: str | Path) -> dict[str, Any]:
    """Write the next version of the artifact at ``artifact_dir`` to ``out_dir``; a summary
    (``version``, ``parent``, ``last_sequence``, ``items``, and ``skipped``: the sequences of
    records that no longer applied, left out as the servers left them out)."""
    source = Path(artifact_dir)
    out = Path(out_dir)
    if out.resolve() == source.resolve():
        raise ArtifactError("compaction writes a new folder: --out must differ from --artifact")
    artifact = Artifact.load(source)
    snap, skipped = replay(artifact, changelog)
    # A replay stops at the first missing record: refused, as a server start is, rather than
    # a version that silently leaves out every record past it (review, session 52). Records
    # written since the replay are the servers' to apply after this version.
    changelog.more_after(snap.sequence)
    live = sorted(snap.artifact.positions.values())
    art = snap.artifact
    items = [art.items[r] for r in live]
    colors = [art.colors[r] for r in live]
    embeddings = np.ascontiguousarray(art.embeddings[live], dtype=np.float32)
    originals = {item.id: item.image for item in artifact.items}
    stored = ItemImages(source, originals)
    thumbnails = [snap.thumbnails.get(i.id) or stored.get(i.id) for i in items]
    manifest = artifact.manifest
    index = manifest.get("index", {})
    # What the operator asked at build (--index, --nprobe, ...) is asked again at the new
    # size: `auto` chooses afresh (a flat index becomes IVF once the catalogue outgrows it).
    requested = dict(index.get("requested") or {})
    if "requested_kind" in index:
        kind = str(index["requested_kind"])
        params = dict(requested)
    else:  # a manifest from before the kind was recorded: the kind it has, sized afresh
        kind = str(index.get("kind", "auto"))
        params = {
            k: v for k, v in (index.get("params") or {}).items() if k not in ("nlist", "nprobe")
        }
        if "parts" in params:  # a split index: split again, each part sized afresh
            params = {"partition_by": "slot"}
            kind = "auto"
        params.update({k: v for k, v in requested.items() if k != "partition_by"})
    extra = {}
    encoder = manifest["encoder"]
    if encoder.get("runtime") == "onnx":
        name = str(encoder.get("onnx_file") or ONNX_FILE)
        extra[name] = source / name
    version = _new_version(snap)
    # The model and the heads go in with the rest, before the new folder is published: added
    # after, a compaction stopped between the two published the new version without them
    # under the very version the whole one has (review, session 53).
    more: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stygig-compact-") as scratch:
        if artifact.compat is not None:
            info = {k: v for k, v in (manifest.get("compat") or {}).items() if k != "file"}
            extra[COMPAT_FILE] = artifact.compat.save(Path(scratch) / COMPAT_FILE)
            more["compat"] = {"file": COMPAT_FILE, **info}
        if artifact.heads:
            head_info = {
                k: v
                for k, v in (manifest.get("category_head") or {}).items()
                if k not in ("file", "heads")
            }
            extra[HEAD_FILE] = save_heads(artifact.heads, Path(scratch) / HEAD_FILE)
            more["category_head"] = head_entry(artifact.heads, head_info)
        _write(
            out,
            items=items,
            colors=colors,
            embeddings=embeddings,
            taxonomy=artifact.taxonomy,
            encoder_info=encoder,
            rejects=[],
            index_kind=kind,
            index_params=params,
            requested_index_params=requested,
            build_info={
                "compacted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                # The rows' colours are the parent's measurements (and those of rows changed
                # since, made by the same colour step unless the server was upgraded since).
                "color_method": manifest.get("build", {}).get("color_method"),
                "parent_build": manifest.get("build", {}),
            },
            extra_files=extra,
            whitening=artifact.whitening,
            thumbnails=thumbnails,
            manifest_extra={
                "version": version,
                "catalog": catalog_entry(manifest, snap.version, snap.sequence),
                **more,
            },
        )
    return {
        "version": version,
        "parent": snap.version,
        "last_sequence": snap.sequence,
        "items": len(items),
        "skipped": skipped,
    }


def _new_version(snap: CatalogSnapshot) -> str:
    """A new version id: the parent's, the sequence folded, and the time, hashed."""
    seed = f"{snap.version}+{snap.sequence}@{time.time_ns()}".encode()
    return hashlib.sha256(seed).hexdigest()[:12]


def catalog_entry(parent: Mapping[str, Any], version: str, sequence: int) -> dict[str, Any]:
    """The manifest's ``catalog`` of a version compacted from ``parent`` (a manifest of
    ``version``) at change-log record ``sequence``."""
    return {
        "parent": version,
        "last_sequence": sequence,
        # every artifact before the parent, so records written against any still apply
        "lineage": ancestors(parent),
        # the build they all descend from, however many compactions ago
        "root": lineage_root(parent, version),
    }
