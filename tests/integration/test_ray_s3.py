"""``stygig build|batch --engine ray`` on a catalogue, photos and batch outputs kept in S3.

S3 is moto's server (in this process, on a free port of 127.0.0.1); Ray is a real local
cluster (``ray.init`` with two CPUs), whose workers are separate processes. The cluster is
started *before* the S3 endpoint is set, as a user's running cluster is: its nodes have their
own credentials (set before ``ray.init``, so the workers inherit them) but only the driver
knows where S3 is (``AWS_ENDPOINT_URL``, set afterwards). The workers reach moto only because
StyGig hands them the driver's endpoint (``stygig.distributed.cluster.worker_runtime_env``);
without it they would try the real AWS and every photo would be a reject.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.conftest import encode, garment_image

ray = pytest.importorskip("ray", reason="Ray is the optional ray extra: pip install 'stygig[ray]'")
pytest.importorskip("ray.data", reason="Ray Data is part of the ray extra (ray[data])")
boto3 = pytest.importorskip("boto3", reason="s3:// needs the aws extra")
moto_server = pytest.importorskip("moto.server", reason="moto[server] fakes S3 here")

from stygig import storage  # noqa: E402
from stygig.artifact import Artifact  # noqa: E402
from tests.integration.ray_fixtures import RAY_MARKS  # noqa: E402

pytestmark = RAY_MARKS

BUCKET = "shop"
CATALOG = f"s3://{BUCKET}/catalogue/catalog.csv"
CREDENTIALS = {  # the nodes' own (fake) credentials: never forwarded by StyGig
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
KINDS = ["shirt", "jeans", "dress", "jacket"]
COLOURS = [(200, 30, 30), (30, 60, 190), (40, 150, 60), (230, 200, 40)]
CORRUPT, MISSING = "sku-05", "sku-09"


@pytest.fixture(scope="module")
def s3_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray cluster started with credentials but no S3 endpoint, then a moto S3 server whose
    endpoint only the driver's environment names; the endpoint."""
    home = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in CREDENTIALS.items():
            mp.setenv(key, value)
        for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_PROFILE"):
            mp.delenv(key, raising=False)
        mp.setenv("AWS_CONFIG_FILE", str(home / "config"))  # no ~/.aws of this machine
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        if ray.is_initialized():  # pragma: no cover - another module's cluster left running
            ray.shutdown()
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            mp.setenv("AWS_ENDPOINT_URL", endpoint)  # the driver's alone: set after ray.init
            storage._clients.clear()  # a fresh client reads the new environment
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            yield endpoint
        finally:
            ray.shutdown()
            server.stop()
            storage._clients.clear()


@pytest.fixture(scope="module")
def s3_catalogue(s3_cluster: str) -> dict[str, Any]:
    """Twelve drawn garments in S3 (one photo corrupt, one never uploaded) and a catalogue in
    S3 whose image column names them by ``s3://`` URI."""
    rows = ["id,image,category,gender,name"]
    for i in range(12):
        item_id = f"sku-{i:02d}"
        uri = f"s3://{BUCKET}/photos/{item_id}.jpg"
        colour = COLOURS[i % len(COLOURS)]
        size = (200 + 8 * i, 240)  # no two photos alike
        if item_id == CORRUPT:
            storage.write_bytes(uri, b"\xff\xd8\xff\xe0 not a JPEG after all")
        elif item_id != MISSING:
            storage.write_bytes(uri, encode(garment_image(colour, size)))
        rows.append(f"{item_id},{uri},{KINDS[i % len(KINDS)]},women,item {i}")
    storage.write_bytes(CATALOG, ("\n".join(rows) + "\n").encode())
    queries = f"s3://{BUCKET}/queries/"
    for i, colour in enumerate(COLOURS):
        storage.write_bytes(f"{queries}q{i}.jpg", encode(garment_image(colour, (230, 210))))
    storage.write_bytes(f"{queries}broken.jpg", b"not an image")
    return {"catalog": CATALOG, "queries": queries}


@pytest.fixture(scope="module")
def builds(
    s3_catalogue: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The S3 catalogue built by the local engine and by Ray (parts staged in S3 too)."""
    from stygig.build import build_artifact
    from stygig.distributed.ray_build import build_artifact_ray
    from stygig.encoders import load_encoder

    tmp = tmp_path_factory.mktemp("s3-builds")
    encoder = load_encoder("tiny")
    common: dict[str, Any] = {"progress": False, "batch_size": 4}
    local = build_artifact(s3_catalogue["catalog"], tmp / "local", encoder, **common)
    stage = f"s3://{BUCKET}/build-parts/"
    on_ray = build_artifact_ray(
        s3_catalogue["catalog"], tmp / "ray", encoder, actors=1, stage=stage, **common
    )
    return {"local": local, "ray": on_ray, "stage": stage}


def test_ray_build_of_an_s3_catalogue_is_the_local_build(builds: dict[str, Any]) -> None:
    local, on_ray = builds["local"], builds["ray"]
    a, b = Artifact.load(local.path), Artifact.load(on_ray.path)  # checksums verified
    assert [i.id for i in a.items] == [f"sku-{i:02d}" for i in range(12) if i not in (5, 9)]
    assert [i.to_dict() for i in b.items] == [i.to_dict() for i in a.items]
    assert b.items[0].image == f"s3://{BUCKET}/photos/sku-00.jpg"
    # Every file of the artifact (embeddings, index, items, colours, thumbnails, rejects) has
    # the local build's sha256: the tiny encoder is NumPy, run on the same batches of 4 rows
    # (the same rows in each, so the same BLAS calls), so no tolerance is needed at all.
    assert b.manifest["files"] == a.manifest["files"]
    np.testing.assert_array_equal(b.embeddings, a.embeddings)
    assert b.manifest["build"]["catalog"] == CATALOG
    assert b.manifest["build"]["ray"]["parts"] == 3  # 12 rows, 4 per block
    assert storage.list_keys(builds["stage"]) == []  # the S3 stage is cleaned up


def test_bad_photos_in_s3_are_rejects_in_both_builds(builds: dict[str, Any]) -> None:
    """A corrupt object and a missing one: reject rows with the same reasons and messages,
    never a crash, in both engines."""
    local, on_ray = builds["local"], builds["ray"]
    expected = {"corrupt_image": 1, "missing_image": 1}
    assert local.manifest["counts"]["rejects_by_reason"] == expected
    assert on_ray.manifest["counts"]["rejects_by_reason"] == expected
    text = (on_ray.path / "rejects.csv").read_text()
    assert text == (local.path / "rejects.csv").read_text()
    assert CORRUPT in text and MISSING in text
    assert "not a JPEG" not in text  # a message never echoes the photo's bytes


def _records(uri: str) -> list[dict[str, Any]]:
    lines = [
        line
        for key in storage.list_keys(uri)
        if not key.endswith("_batch.json")
        for line in storage.read_bytes(key).decode().splitlines()
    ]
    records = [json.loads(line) for line in lines]
    for record in records:
        record.get("recommendation", {}).pop("timings_ms", None)
    return sorted(records, key=lambda r: int(r["index"]))


def test_ray_batch_from_s3_to_s3_is_the_in_process_batch(
    builds: dict[str, Any], s3_catalogue: dict[str, Any]
) -> None:
    from stygig.batch import run_batch
    from stygig.distributed.ray_batch import run_batch_ray
    from stygig.engine import Recommender

    artifact = builds["ray"].path
    src = s3_catalogue["queries"]
    local_out, ray_out = f"s3://{BUCKET}/recs-local/", f"s3://{BUCKET}/recs-ray/"
    local = run_batch(Recommender.from_path(artifact), src, local_out, progress=False)
    on_ray = run_batch_ray(artifact, src, ray_out, batch_size=2, actors=1, progress=False)
    assert (on_ray.total, on_ray.processed, on_ray.errors) == (5, 5, 1)
    assert (local.total, local.processed, local.errors) == (5, 5, 1)
    assert on_ray.errors_by_code == local.errors_by_code
    a, b = _records(local_out), _records(ray_out)
    assert [r["index"] for r in b] == list(range(5))  # each input once
    assert b == a
    ok = [r for r in b if r["status"] == "ok"]
    assert len(ok) == 4 and all(r["recommendation"]["items"] for r in ok)  # outfits, not empty
    assert [r["id"] for r in b if r["status"] == "error"] == ["broken.jpg"]


def test_remote_catalogue_names_resolve_beneath_its_s3_folder(s3_cluster: str) -> None:
    """Relative photo names in an S3 catalogue resolve beneath its folder (or an s3:// images
    prefix), as a local catalogue's resolve beneath its folder; a local path that is not
    there is a reject, as locally. Driver only: no photo is read."""
    from stygig.catalog import read_catalog
    from stygig.errors import NotFoundError

    uri = f"s3://{BUCKET}/relative/catalog.csv"
    storage.write_bytes(
        uri,
        b"id,image,category\n"
        b"a,photos/a.jpg,shirt\n"
        b"b,/nowhere/b.jpg,jeans\n"
        b"c,s3://other/c.jpg,dress\n"
        b"d,photos/../../../up.jpg,shirt\n",  # S3 keys have no '..': never another folder
    )
    read = read_catalog(uri)
    images = [i.image for i in read.items]
    assert images == [f"s3://{BUCKET}/relative/photos/a.jpg", "s3://other/c.jpg"]
    assert [(r.id, r.reason, r.row) for r in read.rejects] == [
        ("b", "missing_image", 2),
        ("d", "missing_image", 4),
    ]
    assert read.rows == {"a": 1, "c": 3}
    again = read_catalog(uri, images_dir=f"s3://{BUCKET}/pics/")
    assert again.items[0].image == f"s3://{BUCKET}/pics/photos/a.jpg"
    with pytest.raises(NotFoundError, match="does not exist"):
        read_catalog(f"s3://{BUCKET}/relative/absent.csv")


def test_a_worker_failure_is_said_as_stygig_says_it(
    s3_catalogue: dict[str, Any], builds: dict[str, Any]
) -> None:
    """An encoder the actors cannot load (its ONNX copy gone from the stage) fails the build
    with StyGig's own error and message, not Ray's wrapper around the worker's traceback."""
    from stygig.catalog import read_catalog
    from stygig.distributed.ray_build import EncoderLoader, embed_on_ray
    from stygig.encoders import load_encoder
    from stygig.errors import NotFoundError

    encoder = load_encoder("tiny")
    read = read_catalog(s3_catalogue["catalog"])
    lost = EncoderLoader(dict(encoder.describe()), onnx=f"s3://{BUCKET}/gone/encoder.onnx")
    with pytest.raises(NotFoundError, match=r"on a Ray worker: s3://shop/gone/encoder\.onnx does"):
        embed_on_ray(read, encoder, lost, f"s3://{BUCKET}/lost-parts/", actors=1, progress=False)
