"""Reading a file or an object line by line: streamed, bounded by the longest line allowed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stygig import batch, storage
from stygig.errors import StygigError


def test_lines_are_split_at_newlines_and_an_over_long_line_is_none(tmp_path: Path) -> None:
    path = tmp_path / "lines.jsonl"
    long = b"x" * 200_000  # over the limit below, across several 64 KiB chunks
    sep = "b\u2028c".encode()  # a line separator inside a line: text, not an end
    path.write_bytes(b"a\r\n" + long + b"\n" + sep + b"\n" + long)
    got = list(storage.iter_lines(path, max_line_bytes=100_000))
    assert got == [b"a", None, sep, None]
    assert list(storage.iter_lines(path, max_line_bytes=200_000))[1] == long


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(StygigError) as caught:
        list(storage.iter_lines(fifo))
    assert caught.value.code == "not_a_regular_file"


def test_an_over_long_manifest_line_is_that_inputs_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1.5 GB one-line manifest grew a batch run to 3 GB, and 2.5 GB killed it with a
    MemoryError traceback: now the line is one input's error and the run goes on."""
    monkeypatch.setattr(batch, "MAX_MANIFEST_LINE", 1_000)
    lines = [{"id": "a", "image": "a.jpg"}, {"id": "b", "image": "b" * 5_000}, {"id": "c"}]
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    inputs = list(batch._manifest_inputs(str(path)))
    assert [i.key for i in inputs] == ["a", "line-2", "c"]
    assert inputs[1].error is not None and "over 1,000 bytes" in inputs[1].error.message
    assert inputs[0].images == (str(tmp_path / "a.jpg"),)


@pytest.mark.parametrize(
    "tampered",
    [b'{"index": 1e400, "status": "ok"}', b"[" * 100_000, b'{"index": 2}', b'{"index": "3"}'],
)
def test_a_resumed_output_counts_only_real_records_as_done(tmp_path: Path, tampered: bytes) -> None:
    """A tampered output line crashed the resume (OverflowError, RecursionError) or, as a
    stub ``{"index": 2}``, marked an input done that never was."""
    out = tmp_path / "out.jsonl"
    good = b'{"index": 0, "id": "a", "status": "ok"}\n'
    out.write_bytes(good + tampered + b"\n" + b'{"index": 5, "id": "f", "status": "ok"}\n')
    sink = batch.JsonlSink(out)
    try:
        assert sink.done() == {0}
    finally:
        sink.close(complete=False)
    assert out.read_bytes() == good  # the rest is done again


def test_a_sidecar_that_is_not_a_run_record_is_refused_clearly(tmp_path: Path) -> None:
    dst = tmp_path / "out.jsonl"
    Path(f"{dst}.batch.json").write_text("[1, 2]")
    with pytest.raises(StygigError) as caught:
        batch._check_run(str(dst), {"src": "x"}, overwrite=False)
    assert "not a batch run's record" in caught.value.message
