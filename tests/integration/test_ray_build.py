"""``stygig build|batch --engine ray`` on a real local Ray cluster, against the local engine.

One Ray cluster for the module (``ray.init`` with two CPUs: the build's encoder actors and the
batch's answer actors are real worker processes). On a 200-row slice of the shared Kaggle photos
(one photo corrupted, one missing, 20 rows held out as queries) the Ray-built artifact must be
the local one: same ids, manifest fields, rejects and checksums, embeddings within the
encoder's tolerance, and the same top-5 votes for every held-out query.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import KAGGLE_DIR, require_dataset

ray = pytest.importorskip("ray", reason="Ray is the optional ray extra: pip install 'stygig[ray]'")
pytest.importorskip("ray.data", reason="Ray Data is part of the ray extra (ray[data])")

from stygig.artifact import Artifact  # noqa: E402
from stygig.engine import Options, Query, Recommender  # noqa: E402
from stygig.rowfile import FileRows  # noqa: E402
from tests.integration.ray_fixtures import RAY_MARKS, local_ray  # noqa: E402

pytestmark = RAY_MARKS

ROWS = 200
HOLD_OUT_EVERY = 10


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    with local_ray():
        yield


@pytest.fixture(scope="module")
def kaggle_slice(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """200 Kaggle rows: 180 for the catalogue (one photo corrupt, one missing), 20 held out."""
    pytest.importorskip("torch")
    root = require_dataset(KAGGLE_DIR)
    tmp = tmp_path_factory.mktemp("kaggle-slice")
    header, *rows = (root / "styles.csv").read_text(encoding="utf-8").splitlines()[: ROWS + 1]
    catalogue = [r for i, r in enumerate(rows) if i % HOLD_OUT_EVERY]
    held_out = [r for i, r in enumerate(rows) if not i % HOLD_OUT_EVERY]
    images = tmp / "images"
    images.mkdir()
    for row in rows:
        item_id = row.split(",", 1)[0]
        if (root / "images" / f"{item_id}.jpg").is_file():
            shutil.copyfile(root / "images" / f"{item_id}.jpg", images / f"{item_id}.jpg")
    corrupt, missing = catalogue[3].split(",", 1)[0], catalogue[7].split(",", 1)[0]
    (images / f"{corrupt}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    (images / f"{missing}.jpg").unlink(missing_ok=True)
    (tmp / "styles.csv").write_text("\n".join([header, *catalogue]) + "\n", encoding="utf-8")
    queries = tmp / "queries"
    queries.mkdir()
    for row in held_out:
        item_id = row.split(",", 1)[0]
        if (images / f"{item_id}.jpg").is_file():
            shutil.copyfile(images / f"{item_id}.jpg", queries / f"{item_id}.jpg")
    (queries / "broken.jpg").write_bytes(b"not an image")
    return {"root": tmp, "csv": tmp / "styles.csv", "images": images, "queries": queries}


@pytest.fixture(scope="module")
def builds(cluster: None, kaggle_slice: dict[str, Any]) -> dict[str, Path]:
    """The same catalogue built by the local engine and by Ray, with the same exported encoder."""
    from stygig.build import build_artifact, make_build_encoder
    from stygig.distributed.ray_build import build_artifact_ray

    tmp: Path = kaggle_slice["root"]
    common: dict[str, Any] = {"images_dir": kaggle_slice["images"], "progress": False}
    with make_build_encoder("efficientnet-lite0") as (encoder, files):
        local = build_artifact(
            kaggle_slice["csv"], tmp / "local", encoder, extra_files=files, **common
        )
        on_ray = build_artifact_ray(
            kaggle_slice["csv"], tmp / "ray", encoder, extra_files=files, batch_size=16, **common
        )
    return {"local": local.path, "ray": on_ray.path}


def test_ray_artifact_is_the_local_one(builds: dict[str, Path]) -> None:
    local, on_ray = Artifact.load(builds["local"]), Artifact.load(builds["ray"])  # checksums
    assert [i.id for i in on_ray.items] == [i.id for i in local.items]
    assert [i.to_dict() for i in on_ray.items] == [i.to_dict() for i in local.items]
    assert on_ray.manifest.keys() == local.manifest.keys()
    for key in ("counts", "encoder", "index", "format_version"):
        assert on_ray.manifest[key] == local.manifest[key], key
    assert set(local.manifest["build"]) <= set(on_ray.manifest["build"])
    assert on_ray.manifest["build"]["ray"]["parts"] >= 2  # the work was spread over blocks
    assert on_ray.manifest["counts"]["rejects_by_reason"] == {
        "corrupt_image": 1,
        "missing_image": 1,
    }
    assert (builds["ray"] / "rejects.csv").read_text() == (
        builds["local"] / "rejects.csv"
    ).read_text()
    np.testing.assert_allclose(on_ray.embeddings, local.embeddings, atol=1e-4)
    assert (builds["ray"] / "thumbnails.bin").read_bytes() == (
        builds["local"] / "thumbnails.bin"
    ).read_bytes()
    assert not builds["ray"].with_name("ray.ray-parts").exists()  # the stage is cleaned up


def test_ray_artifact_answers_like_the_local_one(
    builds: dict[str, Path], kaggle_slice: dict[str, Any]
) -> None:
    local, on_ray = Recommender.from_path(builds["local"]), Recommender.from_path(builds["ray"])
    photos = sorted(p for p in kaggle_slice["queries"].glob("*.jpg") if p.name != "broken.jpg")
    assert len(photos) >= 15
    for photo in photos:
        a = local.recommend(Query(images=(str(photo),)), Options()).to_dict()
        b = on_ray.recommend(Query(images=(str(photo),)), Options()).to_dict()
        assert b["query"][0]["votes"] == a["query"][0]["votes"], photo.name
        assert [n["id"] for n in b["query"][0]["neighbors"]] == [
            n["id"] for n in a["query"][0]["neighbors"]
        ], photo.name
        assert [i["id"] for i in b["items"]] == [i["id"] for i in a["items"]], photo.name


def test_ray_artifact_passes_inspect(
    builds: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from stygig.cli import main

    assert main(["inspect", str(builds["ray"])]) == 0
    out = capsys.readouterr().out
    assert "checksums      ok" in out and "corrupt_image" in out


def test_a_retried_block_is_never_duplicated(
    builds: dict[str, Path], kaggle_slice: dict[str, Any], tmp_path: Path
) -> None:
    """Assembly keeps each catalogue row once, whatever parts a retried block left behind."""
    from stygig.catalog import read_catalog
    from stygig.distributed.ray_build import assemble, encode_part

    read = read_catalog(kaggle_slice["csv"], images_dir=kaggle_slice["images"])
    n, dim = len(read.items), 4
    stage = tmp_path / "stage"
    stage.mkdir()

    def part(lo: int, hi: int, value: float) -> bytes:
        pos = np.arange(lo, hi)
        batch = {
            "pos": pos,
            "ok": np.ones(len(pos), bool),
            "color": np.array([json.dumps({"rgb": [1, 2, 3]})] * len(pos), object),
            "thumb": np.array([b"jpeg"] * len(pos), object),
            "reason": np.array([""] * len(pos), object),
            "message": np.array([""] * len(pos), object),
        }
        return encode_part(batch, np.full((len(pos), dim), value, np.float32))

    (stage / f"part-{0:010d}-{n:010d}.npz").write_bytes(part(0, n, 1.0))
    (stage / f"part-{0:010d}-{10:010d}.npz").write_bytes(part(0, 10, 1.0))  # a retry's copy
    result = assemble(read, str(stage), dim)
    assert [i.id for i in result.items] == [i.id for i in read.items]
    assert np.concatenate(result.embeddings).shape == (n, dim)
    (stage / f"part-{0:010d}-{n:010d}.npz").unlink()
    from stygig.errors import StygigError

    with pytest.raises(StygigError, match="without"):
        assemble(read, str(stage), dim)  # a lost part is said, never papered over


def test_an_actor_writes_no_part_once_its_build_has_ended(tmp_path: Path) -> None:
    """Code review (session 35): a build that fails or is interrupted clears its run folder
    while an actor may still be embedding a batch; its part would then recreate the folder.
    An actor writes only while the run's marker is there."""
    from stygig.distributed.ray_build import RUN_MARKER, EmbedAndWrite, EncoderLoader
    from stygig.encoders import load_encoder

    encoder = load_encoder("tiny")
    stage = tmp_path / "run-x"
    stage.mkdir()
    actor = EmbedAndWrite(
        EncoderLoader(dict(encoder.describe()), name="tiny", runtime="numpy"), str(stage), 1, "cpu"
    )
    side = encoder.preprocess.size
    batch = {
        "pos": np.arange(2),
        "ok": np.ones(2, bool),
        "tensor": np.zeros((2, 3, side, side), np.float32),
        "color": np.array([json.dumps({"rgb": [1, 2, 3]})] * 2, object),
        "thumb": np.array([b"jpeg"] * 2, object),
        "reason": np.array([""] * 2, object),
        "message": np.array([""] * 2, object),
    }
    (stage / RUN_MARKER).write_text("{}")
    assert actor(batch)["failure"][0] == "" and len(list(stage.glob("part-*"))) == 1
    for p in stage.iterdir():  # the driver clears the run folder: the build has ended
        p.unlink()
    row = actor(batch)
    assert "stage_gone" in str(row["failure"][0]) and list(stage.iterdir()) == []


# -- the ivfpq index trained and filled as Ray tasks ----------------------------------------------


@pytest.fixture
def one_faiss_thread() -> Iterator[None]:
    """The driver's FAISS on one thread, as Ray's one-CPU tasks run it (and OpenMP's spinning
    threads crawl on shared cores)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def _synthetic_catalogue(n: int = 600, dim: int = 32) -> dict[str, Any]:
    """``n`` clustered unit vectors in four outfit slots of unequal sizes."""
    from stygig.catalog import Item, Taxonomy

    rng = np.random.default_rng(7)
    centres = rng.normal(size=(12, dim))
    x = centres[rng.integers(0, 12, n)] + 0.6 * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    x[::20, 0] = 0.25 + 2**-13  # halfway between two float16s: FAISS and NumPy round it apart
    kinds = ["shirt", "shirt", "jeans", "dress", "jacket", "shirt", "jeans"]
    items = [Item(id=f"s{i}", image=f"/img/{i}.jpg", category=kinds[i % 7]) for i in range(n)]
    return {
        "items": items,
        "colors": [{"rgb": [i % 255, 0, 0]} for i in range(n)],
        "embeddings": x,
        "taxonomy": Taxonomy.load(),
        "encoder_info": {"name": "synthetic", "dim": dim, "runtime": "numpy"},
        "rejects": [],
        "index_kind": "ivfpq",
    }


@pytest.mark.parametrize("split", [True, False], ids=["per-slot", "one-index"])
def test_ivfpq_trained_and_added_as_ray_tasks_is_the_local_index(
    cluster: None, one_faiss_thread: None, tmp_path: Path, split: bool
) -> None:
    """Training (one task per index) and adding (one task per 50 rows) on the cluster give the
    local build's artifact byte for byte: codes, float16 rows, partitions and all."""
    from functools import partial

    from stygig.artifact import write_artifact
    from stygig.distributed.ray_build import build_index_on_ray

    data = _synthetic_catalogue()
    data["index_params"] = {"nlist": 4, "partition_by": "slot" if split else "none"}
    local = write_artifact(tmp_path / "local", **data)
    info: dict[str, Any] = {}
    builder = partial(build_index_on_ray, chunk_rows=50, info=info)
    on_ray = write_artifact(tmp_path / "ray", index_builder=builder, **data)
    a, b = Artifact.load(local), Artifact.load(on_ray)  # checksums verified
    assert b.manifest["index"] == a.manifest["index"]
    assert b.manifest["index"]["kind"] == "ivfpq"
    assert b.manifest["files"] == a.manifest["files"]  # every file, same bytes
    parts = 4 if split else 1
    assert info["train_tasks"] == info["ivfpq_indexes"] == parts
    assert info["add_tasks"] >= 12  # 600 rows, 50 per task (more when split: per slot)
    q = a.embeddings[::37] + 0.01
    np.testing.assert_array_equal(b.index.search(q, 10)[1], a.index.search(q, 10)[1])


def test_ray_build_with_an_ivfpq_index(
    cluster: None, one_faiss_thread: None, kaggle_slice: dict[str, Any], tmp_path: Path
) -> None:
    """``build_artifact_ray(index_kind="ivfpq")``: the index is made by Ray tasks (recorded in
    the manifest) and is the local build's."""
    from stygig.build import build_artifact
    from stygig.distributed.ray_build import build_artifact_ray
    from stygig.encoders import load_encoder

    encoder = load_encoder("tiny")
    common: dict[str, Any] = {
        "images_dir": kaggle_slice["images"],
        "progress": False,
        "index_kind": "ivfpq",
        "index_params": {"nlist": 4, "m": 16, "partition_by": "none"},
        "whiten": False,
    }
    local = build_artifact(kaggle_slice["csv"], tmp_path / "local", encoder, **common)
    on_ray = build_artifact_ray(
        kaggle_slice["csv"], tmp_path / "ray", encoder, index_chunk_rows=64, **common
    )
    ray_index = on_ray.manifest["build"]["ray"]["index"]
    assert ray_index["train_tasks"] == 1 and ray_index["add_tasks"] == 3  # 178 rows
    assert on_ray.manifest["index"] == local.manifest["index"]
    for name in ("index.faiss", "index-vectors.faiss", "embeddings.npy"):
        assert on_ray.manifest["files"][name] == local.manifest["files"][name], name
    art = Artifact.load(on_ray.path)
    assert isinstance(art.embeddings, FileRows)  # an ivfpq artifact leaves them on disk


def _strip(line: str) -> dict[str, Any]:
    record = json.loads(line)
    record.get("recommendation", {}).pop("timings_ms", None)
    return dict(record)


def test_batch_on_ray_writes_the_local_records(
    builds: dict[str, Path],
    kaggle_slice: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stygig.batch import run_batch
    from stygig.distributed import ray_batch
    from stygig.distributed.ray_batch import run_batch_ray

    # Three windows of inputs (the driver holds one at a time; review, session 35: it held
    # every input, 1.1 GB for a 300 MB manifest): the records are the same, in order.
    monkeypatch.setattr(ray_batch, "WINDOW_INPUTS", 8)
    src = str(kaggle_slice["queries"])
    local = run_batch(
        Recommender.from_path(builds["ray"]), src, str(tmp_path / "local.jsonl"), progress=False
    )
    on_ray = run_batch_ray(
        builds["ray"], src, str(tmp_path / "ray.jsonl"), batch_size=8, progress=False
    )
    assert (on_ray.total, on_ray.processed, on_ray.errors) == (local.total, local.processed, 1)
    assert on_ray.errors_by_code == local.errors_by_code
    a = [_strip(x) for x in (tmp_path / "local.jsonl").read_text().splitlines()]
    b = [_strip(x) for x in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert [r["index"] for r in b] == list(range(len(a)))  # in order, each input once
    assert b == a
    again = run_batch_ray(builds["ray"], src, str(tmp_path / "ray.jsonl"), progress=False)
    assert again.processed == 0 and again.skipped == local.total  # resumed: nothing redone


def test_batch_on_ray_applies_the_change_log_like_a_local_run(
    builds: dict[str, Path], kaggle_slice: dict[str, Any], tmp_path: Path
) -> None:
    """`stygig batch --engine ray` answers with the artifact's change log applied, on the
    driver (which lists --all-items) and in every actor alike: the local run's records, the
    added item among the inputs and the removed one nowhere."""
    from stygig.batch import run_batch
    from stygig.catalog.changelog import ChangeLog
    from stygig.cli import main
    from stygig.distributed.ray_batch import run_batch_ray
    from stygig.living import replay

    art = tmp_path / "art"
    shutil.copytree(builds["ray"], art)
    items = Artifact.load(art).items
    photo = next(p for p in sorted(kaggle_slice["queries"].glob("*.jpg")) if p.name != "broken.jpg")
    add = ["catalog", "add", "--artifact", str(art), "--photo", str(photo)]
    assert main([*add, "--field", "id=added-1", "--field", f"category={items[0].category}"]) == 0
    assert main(["catalog", "remove", items[1].id, "--artifact", str(art)]) == 0
    log = str(tmp_path / "art.changes")

    rec = Recommender.from_path(art)
    assert replay(rec, ChangeLog(log)) == 2
    local = run_batch(rec, str(art), str(tmp_path / "local.jsonl"), progress=False)
    on_ray = run_batch_ray(
        art, str(art), str(tmp_path / "ray.jsonl"), batch_size=8, progress=False, change_log=log
    )
    assert (on_ray.total, on_ray.errors) == (local.total, local.errors) == (len(items), 0)
    a = [_strip(x) for x in (tmp_path / "local.jsonl").read_text().splitlines()]
    b = [_strip(x) for x in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert b == a
    assert "added-1" in {r["id"] for r in b} and items[1].id not in {r["id"] for r in b}
    answered = {
        i["id"] for r in b for group in r["recommendation"]["by_category"].values() for i in group
    }
    assert items[1].id not in answered and answered


def test_stage_cleanup_removes_only_parts(builds: dict[str, Path]) -> None:
    """The stage location is plain storage: listing and removing parts there never touches
    anything else (a foreign file in a shared stage folder survives the build's cleanup)."""
    from stygig.distributed.ray_build import _clear

    stage = builds["ray"].parent / "shared-stage"
    stage.mkdir(exist_ok=True)
    (stage / "notes.txt").write_text("keep me")
    (stage / "part-0000000000-0000000002.npz").write_bytes(b"x")
    _clear(str(stage))
    assert sorted(p.name for p in stage.iterdir()) == ["notes.txt"]


def test_a_build_keeps_to_its_own_stage_folder_and_clears_it_when_interrupted(
    cluster: None, kaggle_slice: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review (session 35): two builds given one --ray-stage read each other's parts (one
    exited 0 with 30 of 131 rows from the other catalogue), each cleared the other's at start,
    and an interrupted build left its parts and encoder copy behind. Each build now writes in
    a run folder of its own, and removes it however it ends."""
    from stygig.build import make_build_encoder
    from stygig.distributed import ray_build

    shared = tmp_path / "shared-stage"
    (shared / "run-another-build").mkdir(parents=True)
    foreign = {  # another build's parts, one at the top as an older version wrote them
        shared / f"part-{0:010d}-{16:010d}.npz": b"theirs",
        shared / "run-another-build" / f"part-{0:010d}-{16:010d}.npz": b"theirs too",
        shared / "run-another-build" / "encoder.onnx": b"their encoder",
    }
    for path, data in foreign.items():
        path.write_bytes(data)
    seen: list[list[str]] = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        mine = sorted(
            str(p.relative_to(shared))
            for p in shared.rglob("*")
            if p.is_file() and p not in foreign
        )
        seen.append(mine)
        raise KeyboardInterrupt  # Ctrl-C once the cluster's work is done

    monkeypatch.setattr(ray_build, "finish_build", interrupted)
    with (
        make_build_encoder("efficientnet-lite0") as (encoder, files),
        pytest.raises(KeyboardInterrupt),
    ):
        ray_build.build_artifact_ray(
            kaggle_slice["csv"],
            tmp_path / "out",
            encoder,
            extra_files=files,
            images_dir=kaggle_slice["images"],
            progress=False,
            batch_size=64,
            stage=str(shared),
        )
    [mine] = seen
    folders = {m.split("/", 1)[0] for m in mine}
    assert len(folders) == 1 and folders.pop().startswith("run-")  # all in one folder of its own
    assert any(m.endswith("encoder.onnx") for m in mine) and sum("part-" in m for m in mine) >= 2
    left = {p for p in shared.rglob("*") if p.is_file()}
    assert left == set(foreign)  # its own files gone, nobody else's touched
    assert all(p.read_bytes() == data for p, data in foreign.items())
    assert sorted(p.name for p in shared.iterdir()) == sorted(
        ["run-another-build", f"part-{0:010d}-{16:010d}.npz"]
    )


def _build_args(argv: list[str]) -> Any:
    """``stygig build`` parsed by the CLI's own parser, with the engine flags (registered by
    stygig.cli once wired; added here to its build subparser until then)."""
    import argparse

    from stygig.cli import _parser
    from stygig.distributed.command import add_engine_flags

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    build = sub.choices["build"]
    if not any("--engine" in a.option_strings for a in build._actions):
        add_engine_flags(build, "build")
    return parser.parse_args(["build", *argv])


def test_cli_build_engine_ray(
    cluster: None, kaggle_slice: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stygig.distributed.command import run_build_ray_command, wants_ray

    args = _build_args(
        [
            "--catalog",
            str(kaggle_slice["csv"]),
            "--images",
            str(kaggle_slice["images"]),
            "--encoder",
            "tiny",
            "--out",
            str(tmp_path / "art"),
            "--engine",
            "ray",
            "--ray-actors",
            "1",
            "--quiet",
        ]
    )
    assert wants_ray(args)
    assert run_build_ray_command(args) == 0
    out = capsys.readouterr().out
    assert "1 encoder actor(s) on cpu" in out and "rejected corrupt_image: 1" in out
    art = Artifact.load(tmp_path / "art")
    assert art.manifest["encoder"]["name"] == "tiny" and art.manifest["build"]["ray"]["actors"] == 1


def test_cli_build_engine_ray_refuses_bad_flags(tmp_path: Path) -> None:
    from stygig.distributed.command import run_build_ray_command
    from stygig.errors import InvalidOptionsError

    args = _build_args(["--catalog", "c.csv", "--out", "o", "--engine", "ray", "--batch-size", "1"])
    args.batch_size = 0  # (argparse refuses 0 itself; the Ray run checks again)
    with pytest.raises(InvalidOptionsError, match="--batch-size must be positive"):
        run_build_ray_command(args)
    # Review, session 49: a NaN or an infinity passed "<= 0" and ended in a traceback after the
    # run record was written; argparse refuses them now, before anything runs.
    for flag, value in (
        ("--ray-actors", "0"),
        ("--ray-actor-cpus", "nan"),
        ("--ray-actor-cpus", "inf"),
    ):
        with pytest.raises(SystemExit) as e:
            _build_args(["--catalog", "c.csv", "--out", "o", "--engine", "ray", flag, value])
        assert e.value.code == 2


def test_engine_local_never_imports_ray() -> None:
    """``--engine`` flags and dispatch live in a module that imports only the standard library."""
    import subprocess
    import sys

    code = (
        "import sys, argparse\n"
        "from stygig.distributed.command import add_engine_flags, wants_ray\n"
        "p = argparse.ArgumentParser(); add_engine_flags(p, 'build')\n"
        "a = p.parse_args([])\n"
        "assert not wants_ray(a) and a.engine == 'local'\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_ray_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from stygig.distributed import cluster as cluster_module
    from stygig.errors import StygigError

    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(StygigError, match=r"pip install 'stygig\[ray\]'"):
        cluster_module.import_ray()


def test_other_index_kinds_are_built_locally(tmp_path: Path) -> None:
    """Only ``ivfpq`` goes to the cluster: other kinds (and a split with no ``ivfpq`` part)
    are what build_index gives, without Ray tasks."""
    from stygig.distributed.ray_build import build_index_on_ray
    from stygig.index import PartitionedIndex

    data = _synthetic_catalogue(n=200)
    x = data["embeddings"]
    info: dict[str, Any] = {}
    assert build_index_on_ray(x, "flat", None, {}, tmp_path, info=info).kind == "flat"
    slots = [data["taxonomy"].slot_of(i.category) for i in data["items"]]
    split = build_index_on_ray(x, "auto", slots, {}, tmp_path, info=info)
    assert isinstance(split, PartitionedIndex) and {p.kind for p in split.parts} == {"flat"}
    assert info == {} and not any(tmp_path.iterdir())


def test_ray_device_cuda_without_gpus_is_refused_before_any_work(
    cluster: None, builds: dict[str, Path], kaggle_slice: dict[str, Any], tmp_path: Path
) -> None:
    """This cluster has no GPU: --ray-device cuda is refused before a catalogue is read or a
    batch run is started (no stage, no output, no run record)."""
    from stygig.build import make_build_encoder
    from stygig.distributed.ray_batch import run_batch_ray
    from stygig.distributed.ray_build import build_artifact_ray
    from stygig.errors import InvalidOptionsError

    with (
        make_build_encoder("tiny") as (encoder, files),
        pytest.raises(InvalidOptionsError, match="the Ray cluster has no GPUs"),
    ):
        build_artifact_ray(
            tmp_path / "missing.csv", tmp_path / "art", encoder, extra_files=files, device="cuda"
        )
    out = tmp_path / "out.jsonl"
    with pytest.raises(InvalidOptionsError, match="the Ray cluster has no GPUs"):
        run_batch_ray(builds["ray"], str(kaggle_slice["queries"]), str(out), device="cuda")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
