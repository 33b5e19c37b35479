"""The bookkeeping the local, Ray and endpoint batch runners share (:class:`stygig.batch.Tally`):
what a resumed run skips, what it counts, and the summary it records."""

from __future__ import annotations

import json
from pathlib import Path

from stygig.batch import BatchInput, Tally, input_record, open_sink, run_record, start_run
from stygig.errors import InvalidOptionsError


def _inputs(n: int) -> list[BatchInput]:
    return [BatchInput(i, f"k{i}", f"src:{i}", item_ids=(f"k{i}",)) for i in range(n)]


def _start(dst: str, total: int | None, n: int = 6) -> Tally:
    run = run_record("src", dst, kind="manifest", by_photo=False, options={}, part_size=1000)
    assert start_run(dst, run, overwrite=False) is None
    return Tally(dst, run, open_sink(dst), iter(_inputs(n)), total)


def test_a_resumed_run_skips_what_is_written_and_counts_the_rest(tmp_path: Path) -> None:
    dst = str(tmp_path / "out.jsonl")
    first = _start(dst, None)
    first.write([input_record(inp, b"{}") for inp in _inputs(6) if inp.index in (0, 2)])
    first.sink.close(False)
    with open(dst, "ab") as f:
        f.write(b'{"index": 3, "id"')  # torn by a kill: not done

    again = _start(dst, None)
    assert again.done == {0, 2}
    todo = list(again.todo())
    assert [inp.index for inp in todo] == [1, 3, 4, 5]
    assert (again.seen, again.skipped) == (6, 2)
    bad = InvalidOptionsError("no", code="bad_option")
    again.write([input_record(todo[0], b"{}"), input_record(todo[1], bad)])
    again.write([input_record(todo[2], bad), input_record(todo[3], InvalidOptionsError("x"))])
    again.sink.close(True)
    summary = again.finish(True)

    assert (summary.total, summary.processed, summary.skipped) == (6, 4, 2)  # total: inputs seen
    assert summary.errors == 3
    assert summary.errors_by_code == {"bad_option": 2, "invalid_options": 1}
    assert summary.complete and summary.output == dst
    lines = [json.loads(x) for x in Path(dst).read_text().splitlines()]
    assert [r["index"] for r in lines] == [0, 2, 1, 3, 4, 5]
    # Recorded as complete: the same run again has nothing to do and says what it found.
    done = start_run(dst, again.run, overwrite=False)
    assert done is not None and (done.total, done.processed, done.skipped) == (6, 0, 6)
    assert done.errors_by_code == summary.errors_by_code


def test_an_incomplete_run_is_not_recorded_and_a_known_total_stands(tmp_path: Path) -> None:
    dst = str(tmp_path / "out.jsonl")
    tally = _start(dst, total=6)
    for inp in tally.todo():
        tally.write([input_record(inp, b"{}")])
        if inp.index == 2:
            break  # stopped half way
    tally.sink.close(False)
    summary = tally.finish(False)

    assert (summary.total, summary.processed, summary.skipped, summary.errors) == (6, 3, 0, 0)
    assert not summary.complete and summary.errors_by_code == {}
    assert start_run(dst, tally.run, overwrite=False) is None  # not done: resumed, not skipped


def _strict(line: str) -> dict[str, object]:
    """A record as a strict reader takes it: UTF-8 text, no lone surrogate in any string."""
    record = json.loads(line)
    json.dumps(record, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return record


def test_records_hold_text_only_whatever_the_input_names(tmp_path: Path) -> None:
    """Review, session 40: an id, a source or a message holding a lone surrogate (a file name
    byte that is not UTF-8, a JSON "\\ud800") went into the record as it was: a strict JSON
    reader refused the line and the Parquet conversion failed, on every rerun."""
    inp = BatchInput(0, "bad\udcffname.jpg", "/in/bad\udcffname.jpg", images=("x",))
    failed = _strict(input_record(inp, InvalidOptionsError("no \ud800 here")).line)
    assert failed["id"] == "bad\\xffname.jpg" and failed["source"] == "/in/bad\\xffname.jpg"
    assert failed["error"] == {"code": "invalid_options", "message": "no \\ud800 here"}
    ok = _strict(input_record(BatchInput(1, "x\ud800y", "s"), b"{}").line)
    assert ok["id"] == "x\\ud800y" and ok["status"] == "ok"
    plain = _strict(input_record(BatchInput(2, "caf\u00e9 \U0001f600", "s"), b"{}").line)
    assert plain["id"] == "caf\u00e9 \U0001f600"  # text is kept as it is
