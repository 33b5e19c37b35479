"""Shared fixtures: where the shared datasets live, and small images drawn on the fly."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
KAGGLE_DIR = SHARED_DATASETS / "fashion-products"
MANGO_DIR = SHARED_DATASETS / "mango-outfits"


def require_dataset(path: Path) -> Path:
    """Skip the calling test with a clear reason when a shared dataset is absent."""
    if not path.exists():
        pytest.skip(f"shared dataset not found at {path} (see ../shared/datasets/README.md)")
    return path


def garment_image(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (224, 224)
) -> Image.Image:
    """A flat-coloured rectangle 'garment' on a white background."""
    w, h = size
    arr = np.full((h, w, 3), 250, dtype=np.uint8)
    arr[h // 5 : h * 4 // 5, w // 4 : w * 3 // 4] = color
    return Image.fromarray(arr, "RGB")


def closed_schema(node: Any) -> Any:
    """A JSON schema (or any part of one) with every object that lists its properties
    refusing any other: an answer validated against it may hold nothing undocumented."""
    if isinstance(node, dict):
        node = {k: closed_schema(v) for k, v in node.items()}
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        return node
    return [closed_schema(v) for v in node] if isinstance(node, list) else node


def encode(img: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    """Encode an image to bytes in ``fmt``."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def python_sigint_handler() -> Iterator[None]:
    """Every test starts with Python's own SIGINT handler, as a CLI process does: a library an
    earlier test ran in this process (a server, Ray) may leave its own installed, and a Ctrl-C
    a test sends would then do nothing (two full runs on 2026-12-01)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(autouse=True)
def no_server_logging_left() -> Iterator[None]:
    """A test that runs ``stygig serve`` in this process (``main(["serve", ...])``) points the
    root logger at that test's captured stderr (``configure_logging``); a later test's log
    line then went to the closed stream, and a "Logging error" traceback into that test's own
    stderr (two failures when the unit tests ran first, session 53). The JSON handler goes,
    the root level comes back."""
    import logging

    root = logging.getLogger()
    level = root.level
    yield
    for handler in [h for h in root.handlers if type(h.formatter).__name__ == "JsonFormatter"]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def jpeg_bytes() -> bytes:
    return encode(garment_image())


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """``(catalog folder, artifact folder)``: the sample catalogue built with the tiny encoder,
    once per session and shared by every test that needs a real artifact. Tests read it and
    copy it before changing anything: at the end of the session it must still verify."""
    from stygig.artifact import read_manifest, verify_files
    from tests.integration.server_fixtures import sample_artifact

    catalog, artifact = sample_artifact(tmp_path_factory.mktemp("sample"))
    yield catalog, artifact
    verify_files(artifact, read_manifest(artifact))


@pytest.fixture
def live(sample: tuple[Path, Path], tmp_path: Path) -> Any:
    """``(LiveCatalog, catalog folder)``: a copy of the sample artifact taking changes
    through a change log in ``tmp_path``."""
    import shutil

    from stygig.artifact import Artifact
    from stygig.catalog.changelog import ChangeLog
    from stygig.engine import Recommender
    from stygig.living import LiveCatalog

    art = tmp_path / "artifact"
    shutil.copytree(sample[1], art)
    rec = Recommender(Artifact.load(art))
    return LiveCatalog(rec, ChangeLog(tmp_path / "log")), sample[0]


@pytest.fixture
def fail_folder_sync(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A call that makes the change log's ``fsync`` of a folder fail from then on (a failing
    disk, as after a record's link); files still sync."""
    import os
    import stat

    from stygig.catalog import changelog

    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        real(fd)

    return lambda: monkeypatch.setattr(changelog.os, "fsync", fsync)
