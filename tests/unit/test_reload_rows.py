"""A hot reload of an ``ivfpq`` catalogue never holds the served version's mapped rows beside
the next version: they are unmapped before it loads (read with ``pread`` until the swap), and
mapped again when the reload is refused (stygig.serving.app.ModelService.reload)."""

from __future__ import annotations

import asyncio
import gc
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from stygig.build import build_artifact
from stygig.encoders import load_encoder
from stygig.engine import Query
from stygig.serving import app as app_module
from stygig.serving.app import ModelService, ReloadRefusedError, ServerConfig
from stygig.serving.catalog_command import CatalogSettings
from stygig.serving.metrics import ServerMetrics


def _mapped() -> str:
    return Path("/proc/self/maps").read_text()


def _build(catalog: Path, out: Path, nlist: int) -> Path:
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        params = {"nlist": nlist, "m": 8, "partition_by": "none"}
        return build_artifact(
            catalog / "catalog.csv",
            out,
            load_encoder("tiny"),
            index_kind="ivfpq",
            index_params=params,
            progress=False,
        ).path
    finally:
        faiss.omp_set_num_threads(threads)


@pytest.mark.slow
def test_reload_unmaps_the_old_rows_before_the_new_version_loads(
    sample: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = _build(sample[0], tmp_path / "v1", 2), _build(sample[0], tmp_path / "v2", 3)
    old_rows, new_rows = str(v1 / "index-vectors.faiss"), str(v2 / "index-vectors.faiss")
    assert Path(old_rows).is_file() and Path(new_rows).is_file()
    broken = tmp_path / "broken"
    shutil.copytree(v2, broken)
    with (broken / "items.jsonl").open("a") as handle:
        handle.write("\n")  # fails verification: the reload is refused
    pointer = tmp_path / "serve-this"
    pointer.write_text(str(v1))
    config = ServerConfig(
        artifact=v1, threads=2, warmup_rounds=1, catalog=CatalogSettings(watch=str(pointer))
    )
    seen_at_load: list[bool] = []
    real_load = app_module._load

    def load(path: Path, verify: bool, device: str):  # type: ignore[no-untyped-def]
        seen_at_load.append(old_rows in _mapped())
        return real_load(path, verify, device)

    monkeypatch.setattr(app_module, "_load", load)

    async def scenario() -> None:
        service = ModelService(config, ServerMetrics())
        await service.start()
        try:
            assert seen_at_load == [False] and old_rows in _mapped()  # warmed: mapped
            photo = (sample[0] / "queries").glob("*.jpg").__next__().read_bytes()
            before = service.require().recommend(Query(images=(photo,))).to_dict()
            pointer.write_text(str(broken))
            with pytest.raises(ReloadRefusedError):
                await service.reload()
            assert seen_at_load == [False, False]  # unmapped while the new version loaded
            assert old_rows in _mapped()  # refused: the served version's rows mapped again
            after = service.require().recommend(Query(images=(photo,))).to_dict()
            assert [i["id"] for i in after["items"]] == [i["id"] for i in before["items"]]
            pointer.write_text(str(v2))
            assert await service.reload() is True
            assert seen_at_load == [False, False, False]
            service.require().recommend(Query(images=(photo,)))
            gc.collect()
            assert old_rows not in _mapped() and new_rows in _mapped()
        finally:
            await service.stop()

    asyncio.run(scenario())
