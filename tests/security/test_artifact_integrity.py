"""An artifact is loaded only when it holds exactly its listed files, each inside its folder.

Holes covered (issue item 12): a manifest with ``"files": {}`` switched verification off; a file
dropped from the checksum list was never checked; a symbolic link could stand in for any file;
``onnx_file`` could name a model outside the artifact; ``onnx_sha256`` was never checked. Every
case tampers with a copy of a real built artifact; the ONNX cases use one built with a small
real ONNX encoder (a hand-written graph, so no torch export is needed).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stygig.artifact import MANIFEST_MAX_BYTES, Artifact, file_sha256, read_manifest
from stygig.build import build_artifact
from stygig.encoders.onnx import ONNX_INPUT, ONNX_OUTPUT, OnnxEncoder
from stygig.encoders.tiny import TINY_SPEC
from stygig.engine import Recommender
from stygig.errors import ArtifactError, StygigError
from tests.integration.server_fixtures import free_port, start_process, wait_ready

#: Seconds ``stygig serve`` may take to refuse the artifact and exit, or to start serving it
#: (imports and a checksum pass take a few seconds; more on a busy 2-core machine).
EXIT_DEADLINE_S = 90.0


def _onnx_graph(path: Path, seed: int) -> Path:
    """A real ONNX encoder for 32 px input: channel means through a seeded 3 x 64 projection."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(seed).normal(size=(3, 64)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", [ONNX_INPUT], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "weights"], [ONNX_OUTPUT]),
        ],
        "channel-means",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, ["batch", 64])],
        [numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the project supports
    helper.set_model_props(model, {"stygig.encoder": "means-onnx"})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def onnx_artifact(sample: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample catalogue built with a real ONNX encoder (its graph carried as encoder.onnx)."""
    catalog, _ = sample
    root = tmp_path_factory.mktemp("onnx-artifact")
    graph = _onnx_graph(root / "encoder.onnx", seed=0)
    info = {"name": "means-onnx", "dim": 64, "preprocess": TINY_SPEC.to_dict(), "weights": None}
    encoder = OnnxEncoder(graph, info, threads=1)
    result = build_artifact(
        catalog / "catalog.csv",
        root / "artifact",
        encoder,
        extra_files={"encoder.onnx": graph},
        whiten=False,  # three channel means: nothing for PCA whitening to work with
        workers=1,
        progress=False,
    )
    return result.path


def _copy(artifact: Path, tmp_path: Path) -> Path:
    """A copy of ``artifact`` two levels below ``tmp_path`` (so ``../../x`` lands in it)."""
    target = tmp_path / "models" / "artifact"
    shutil.copytree(artifact, target)
    return target


def _manifest(path: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    return manifest


def _edit(path: Path, **changes: Any) -> None:
    """Rewrite the manifest with top-level ``changes``, as an attacker who can edit it would."""
    (path / "manifest.json").write_text(json.dumps({**_manifest(path), **changes}))


def _tamper_files(path: Path) -> None:
    """Edit a file (still a valid one) and empty the checksum list."""
    with (path / "taxonomy.yaml").open("a") as f:
        f.write("# edited\n")
    _edit(path, files={})


def _tamper_onnx_file(path: Path) -> None:
    """Point ``onnx_file`` at a real model two folders up, with that model's checksum."""
    outside = _onnx_graph(path.parent.parent / "x.onnx", seed=1)
    encoder = {**_manifest(path)["encoder"], "onnx_file": "../../x.onnx"}
    _edit(path, encoder={**encoder, "onnx_sha256": file_sha256(outside)})


def _refused(path: Path, code: str, *, verify: bool = True) -> None:
    with pytest.raises(ArtifactError) as caught:
        Artifact.load(path, verify=verify)
    assert caught.value.code == code, caught.value.message
    assert str(path.parent) not in caught.value.message


def test_the_untouched_artifacts_load_and_serve_their_encoder(
    sample: tuple[Path, Path], onnx_artifact: Path
) -> None:
    """Control: what the tampering tests below start from is accepted, ONNX encoder included."""
    assert Artifact.load(sample[1]).manifest["files"]
    art = Artifact.load(onnx_artifact)
    assert art.manifest["encoder"]["onnx_sha256"] == file_sha256(onnx_artifact / "encoder.onnx")
    rec = Recommender(art)
    assert rec.encoder.runtime == "onnx" and rec.encoder.name == "means-onnx"


def test_an_empty_checksum_list_is_refused(sample: tuple[Path, Path], tmp_path: Path) -> None:
    """Hole: ``"files": {}`` made the loader verify nothing, so any file could be swapped."""
    path = _copy(sample[1], tmp_path)
    _tamper_files(path)
    _refused(path, "artifact_no_checksums")


def test_an_unlisted_file_is_refused(sample: tuple[Path, Path], tmp_path: Path) -> None:
    """Hole: files in the folder that the manifest does not list were never looked at."""
    path = _copy(sample[1], tmp_path)
    (path / "payload.bin").write_bytes(b"\x00" * 64)
    _refused(path, "artifact_unlisted_file")


def test_a_tampered_file_dropped_from_the_list_is_refused(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """Hole: editing a file and deleting its checksum entry passed verification."""
    path = _copy(sample[1], tmp_path)
    with (path / "taxonomy.yaml").open("a") as f:
        f.write("# edited\n")
    files = _manifest(path)["files"]
    del files["taxonomy.yaml"]
    _edit(path, files=files)
    _refused(path, "artifact_unlisted_file")


@pytest.mark.parametrize("verify", [True, False])
def test_a_symlinked_file_is_refused(
    sample: tuple[Path, Path], tmp_path: Path, verify: bool
) -> None:
    """Hole: a link to a file outside the artifact (same bytes, so the checksum agrees)."""
    path = _copy(sample[1], tmp_path)
    outside = tmp_path / "items.jsonl"
    (path / "items.jsonl").rename(outside)
    (path / "items.jsonl").symlink_to(outside)
    _refused(path, "artifact_symlink", verify=verify)


@pytest.mark.parametrize("verify", [True, False])
def test_an_onnx_file_outside_the_artifact_is_refused(
    onnx_artifact: Path, tmp_path: Path, verify: bool
) -> None:
    """Hole: ``onnx_file: "../../x.onnx"`` loaded a model from outside the folder."""
    path = _copy(onnx_artifact, tmp_path)
    _tamper_onnx_file(path)
    assert (path / "../../x.onnx").resolve() == (tmp_path / "x.onnx").resolve()
    _refused(path, "artifact_unsafe_path", verify=verify)


def test_a_swapped_onnx_model_is_refused(onnx_artifact: Path, tmp_path: Path) -> None:
    """Hole: ``onnx_sha256`` was never compared with the model the server runs."""
    path = _copy(onnx_artifact, tmp_path)
    _onnx_graph(path / "encoder.onnx", seed=1)  # another real model in its place
    model = path / "encoder.onnx"
    entry = {"sha256": file_sha256(model), "bytes": model.stat().st_size}
    _edit(path, files={**_manifest(path)["files"], "encoder.onnx": entry})
    _refused(path, "artifact_onnx_mismatch")


@pytest.mark.parametrize(
    ("tamper", "flags", "expected"),
    [
        (_tamper_files, (), "lists no file checksums"),
        (_tamper_onnx_file, ("--no-verify",), "encoder.onnx_file"),
    ],
    ids=["empty-checksums", "onnx-outside-no-verify"],
)
def test_serve_refuses_a_tampered_artifact_and_exits(
    onnx_artifact: Path,
    tmp_path: Path,
    tamper: Any,
    flags: tuple[str, ...],
    expected: str,
) -> None:
    """Hole: ``stygig serve`` (even with ``--no-verify``) served a tampered artifact."""
    path = _copy(onnx_artifact, tmp_path)
    tamper(path)
    log = tmp_path / "serve.log"
    port = free_port()
    args = ["serve", "--artifact", str(path), "--host", "127.0.0.1", "--port", str(port)]
    process = start_process([*args, *flags], log)
    try:
        # Ready (answering /ping) means the tampered artifact was accepted: fail at once.
        with pytest.raises(RuntimeError, match="exited"):
            wait_ready(f"http://127.0.0.1:{port}", process, timeout=EXIT_DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
        code = process.wait(30)
    text = log.read_text()
    errors = [line for line in text.splitlines() if "stygig: error:" in line]
    assert code == ArtifactError.exit_code, text
    assert len(errors) == 1 and expected in errors[0], text
    assert "the model could not be loaded" in errors[0] and str(tmp_path) not in errors[0]


# -- files re-signed after tampering: the checksums pass, the readers must still refuse ---------


def _resign(path: Path) -> None:
    """Recompute every listed file's size and sha256, as someone who can write the folder can."""
    manifest = _manifest(path)
    manifest["files"] = {
        name: {"sha256": file_sha256(path / name), "bytes": (path / name).stat().st_size}
        for name in manifest["files"]
    }
    (path / "manifest.json").write_text(json.dumps(manifest))


def _npy_claiming(rows: int) -> bytes:
    """A version-1 ``.npy`` whose header claims ``rows`` x 1280 float32, followed by 4 KiB."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, 1280), }}"
    header = header.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(4096)


def _faiss_claiming(path: Path, floats: int) -> None:
    """A flat index whose vector of codes claims ``floats`` floats (offset 37: after the
    fourcc, d, ntotal, two dummies, is_trained and the metric)."""
    data = bytearray((path / "index.faiss").read_bytes())
    assert data[:4] == b"IxFI"
    data[37:45] = floats.to_bytes(8, "little")
    (path / "index.faiss").write_bytes(bytes(data))


def _drop_first_id(path: Path) -> None:
    lines = (path / "items.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    del row["id"]
    (path / "items.jsonl").write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")


def _repeat_first_id(path: Path) -> None:
    lines = (path / "items.jsonl").read_text().splitlines()
    row = {**json.loads(lines[1]), "id": json.loads(lines[0])["id"]}
    (path / "items.jsonl").write_text("\n".join([lines[0], json.dumps(row), *lines[2:]]) + "\n")


def _alias_taxonomy(path: Path) -> None:
    aliases = 'l0: &l0 ["x","x","x"]\nl1: &l1 [*l0,*l0,*l0]\n'
    (path / "taxonomy.yaml").write_text(
        aliases + "slots: {top: {label: top}}\ncategories: {top: {slot: top, aliases: *l1}}\n"
    )


RESIGNED = {
    "embeddings_cut_short": lambda p: (p / "embeddings.npy").write_bytes(
        (p / "embeddings.npy").read_bytes()[:1000]
    ),
    "embeddings_header_claims_petabytes": lambda p: (p / "embeddings.npy").write_bytes(
        _npy_claiming(10**12)
    ),
    "embeddings_of_objects": lambda p: np.save(
        p / "embeddings.npy", np.array([{}, {}], dtype=object), allow_pickle=True
    ),
    "index_claims_terabytes": lambda p: _faiss_claiming(p, 2**40),
    # review, session 41: allocated and zero-filled (1 GiB for a 1 KB file) before the read
    "index_claims_a_gigabyte": lambda p: _faiss_claiming(p, 2**28),
    "item_without_id": _drop_first_id,
    "one_id_on_two_rows": _repeat_first_id,  # review, session 41: loaded and packaged
    "manifest_index_dim_differs": lambda p: _edit(
        p, index={**_manifest(p)["index"], "dim": 2 * _manifest(p)["index"]["dim"]}
    ),
    "taxonomy_slot_is_a_mapping": _alias_taxonomy,
    "taxonomy_category_of_an_unknown_slot": lambda p: (p / "taxonomy.yaml").write_text(
        "slots: {top: {label: top}}\ncategories: {top: nowhere}\n"
    ),
}


@pytest.mark.parametrize("case", sorted(RESIGNED))
def test_a_tampered_file_with_fresh_checksums_is_a_clear_error(
    sample: tuple[Path, Path], tmp_path: Path, case: str
) -> None:
    """Hole: a file whose checksum was recomputed after tampering reached its reader, which
    raised whatever it raised (MemoryError for a header claiming 10^12 rows, KeyError,
    TypeError): a traceback instead of a refusal naming the file."""
    path = _copy(sample[1], tmp_path)
    RESIGNED[case](path)
    _resign(path)
    with pytest.raises(StygigError) as caught:
        Artifact.load(path)
    assert caught.value.exit_code == ArtifactError.exit_code  # a bad taxonomy was 3 (config)
    assert str(tmp_path) not in caught.value.message
    assert ".cpp" not in caught.value.message  # never FAISS's C++ text
    if case == "one_id_on_two_rows":
        assert caught.value.message.endswith("on rows 1 and 2")
    if case.startswith("index_claims"):
        assert "index.faiss claims more than the file holds" in caught.value.message


def test_a_manifest_over_its_bound_is_refused_before_it_is_parsed(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """A manifest was read and parsed whole: 64 MB of ``[0,0,...]`` is a gigabyte of objects.
    Now at most 4 MiB is read (a real manifest is a few kB), in a folder or in an archive."""
    path = _copy(sample[1], tmp_path)
    padding = "[" + "0," * (MANIFEST_MAX_BYTES // 2) + "0]"
    text = json.dumps({**_manifest(path), "padding": []}).replace("[]", padding, 1)
    (path / "manifest.json").write_text(text)
    assert (path / "manifest.json").stat().st_size > MANIFEST_MAX_BYTES
    _refused(path, "artifact_bad_manifest")
    with pytest.raises(ArtifactError, match="over 4 MiB"):
        read_manifest(path)


def test_a_format_version_of_5000_digits_is_a_clear_error(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    path = _copy(sample[1], tmp_path)
    (path / "manifest.json").write_text(
        json.dumps({**_manifest(path), "format_version": 0}).replace(
            '"format_version": 0', '"format_version": 1' + "0" * 5000
        )
    )
    _refused(path, "artifact_bad_manifest")
