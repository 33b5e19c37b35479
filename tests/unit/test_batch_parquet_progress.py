"""A Parquet batch run killed mid-way loses a bounded amount of work, in time as in count.

Before (session 52): a Parquet output was staged in parts of ``part_size`` (1,000) records, each
written only once its range was over, so a ``kill -9`` lost up to 999 finished records, all
computed again by the resumed run. Now a staged part is also written once it has been open
``$STYGIG_BATCH_PART_SECONDS``: the kill loses at most that long's records, and the resumed run
still does every input exactly once.

Real ``stygig batch`` processes (under a memory cap), killed with SIGKILL once a condition holds.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stygig.batch import PART_SECONDS_ENV, ParquetSink, PartsSink, own_parts
from stygig.cli import main as batch_main
from stygig.errors import ConfigError
from tests.integration.server_fixtures import REPO

_MEMORY_CAP = 3 * 1024**3  # a batch with the tiny encoder takes about 0.8 GB of address space
_BATCH = 8

# A batch run whose parts are timed by a clock that moves one second per write (one group of
# records), holding still once it has handed the sink the record of index `argv[1]`: the test
# then kills it, its unwritten part in memory. It says each write, so the test knows what was
# handed over.
_TIMED_RUN = """
import itertools, sys
from stygig import batch
from stygig.cli import main

ticks = itertools.count()
batch._now = lambda: float(next(ticks))
hold_at = int(sys.argv[1])
write = batch.PartsSink.write

def said(self, records):
    write(self, records)
    print("wrote", records[-1][0], flush=True)
    if records[-1][0] >= hold_at:
        print("held", flush=True)
        sys.stdin.readline()

batch.PartsSink.write = said
sys.exit(main(sys.argv[2:]))
"""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_CAP, _MEMORY_CAP))


def _manifest(artifact: Path, path: Path, n: int) -> Path:
    ids = [
        json.loads(line)["id"]
        for line in (artifact / "items.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    path.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "item_ids": [ids[i % len(ids)]]}) + "\n" for i in range(n)
        )
    )
    return path


def _staged(out: Path) -> list[range]:
    """The index ranges of the parts a run staged, checked to follow one another from 0
    without a gap or an overlap: their records are each finished input once."""
    spans = [span for _, span in own_parts(str(out.with_name(out.name + ".parts")))]
    assert [s.start for s in spans] == [0, *(s.stop for s in spans)][: len(spans)], spans
    return spans


def _indexes(out: Path) -> list[int]:
    import pyarrow.parquet as pq

    return sorted(int(r["index"]) for r in pq.read_table(out, columns=["index"]).to_pylist())


@contextmanager
def _process(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        argv,
        cwd=REPO,
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=_cap_memory,
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(30)


def _lines_until(process: subprocess.Popen[str], last: str, timeout: float) -> list[str]:
    """The lines ``process`` says up to ``last`` (within ``timeout``; EOF fails). Read from
    the pipe itself: a buffered reader may hold lines that ``select`` no longer sees."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline, said = time.monotonic() + timeout, b""
    while not said.endswith(f"\n{last}\n".encode()):
        left = deadline - time.monotonic()
        assert left > 0, f"no {last!r} within {timeout} s: {said[-200:]!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"the run ended ({process.wait(30)}) before {last!r}: {said[-200:]!r}"
            said += chunk
    return said.decode().splitlines()


def test_a_killed_parquet_run_loses_only_the_part_still_open(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Parts open 3 (clock) seconds at most, the clock moving a second per group written: at
    the kill, at most 3 groups' records were not in a part yet, whatever ``part_size`` is. The
    resumed run redoes those only, and the Parquet file holds each input once, in row groups
    of ``part_size`` however many parts were staged."""
    artifact = sample[1]
    n, hold_at, seconds = 400, 200, 3
    manifest = _manifest(artifact, tmp_path / "m.jsonl", n)
    out = tmp_path / "out.parquet"
    argv = ["batch", "--artifact", str(artifact), "--input", str(manifest), "--output", str(out)]
    argv += ["--quiet", "--batch-size", str(_BATCH)]
    command = [sys.executable, "-c", _TIMED_RUN, str(hold_at), *argv]
    with _process(command, {PART_SECONDS_ENV: str(seconds)}) as run:
        said = _lines_until(run, "held", 120)
        run.send_signal(signal.SIGKILL)
        assert run.wait(30) == -signal.SIGKILL
    handed = int(said[-2].split()[1]) + 1  # records 0 .. the last one written, in order
    staged = sum(len(span) for span in _staged(out))
    assert handed > hold_at
    lost = handed - staged
    assert 0 <= lost <= seconds * _BATCH, (handed, staged)

    assert batch_main(argv) == 0
    assert f"written now: {n - staged}  already done: {staged}" in capsys.readouterr().out
    assert _indexes(out) == list(range(n))  # each exactly once
    import pyarrow.parquet as pq

    assert pq.ParquetFile(out).metadata.num_row_groups == 1  # 400 rows: under one part_size


def test_a_parquet_run_killed_on_the_clock_resumes_each_input_once(
    sample: tuple[Path, Path], tmp_path: Path
) -> None:
    """On the real clock (parts open 0.05 s at most): killed once two parts are staged, well
    before a part of 1,000 records could be, then resumed: every input once."""
    artifact = sample[1]
    n = 1200
    manifest = _manifest(artifact, tmp_path / "m.jsonl", n)
    out = tmp_path / "out.parquet"
    staging = out.with_name(out.name + ".parts")
    argv = ["batch", "--artifact", str(artifact), "--input", str(manifest), "--output", str(out)]
    argv += ["--quiet", "--batch-size", "16"]
    with _process([sys.executable, "-m", "stygig.cli", *argv], {PART_SECONDS_ENV: "0.05"}) as run:
        deadline = time.monotonic() + 120
        while len(own_parts(str(staging))) < 2:
            assert run.poll() is None, "the batch finished before it could be killed"
            assert time.monotonic() < deadline, "no part staged in time"
            time.sleep(0.01)  # polling the folder: the condition is the parts themselves
        run.send_signal(signal.SIGKILL)
        assert run.wait(30) == -signal.SIGKILL
    staged = sum(len(span) for span in _staged(out))
    assert 0 < staged < n

    assert batch_main(argv) == 0
    assert _indexes(out) == list(range(n))  # each exactly once
    assert not staging.exists()


def test_parts_are_cut_by_time_from_where_the_last_one_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink itself, on a clock the test moves: a part is written when it has been open
    ``part_seconds`` at a write, the next one of the same range starts where it ended, a new
    range starts at its own start, a resumed sink goes on from its parts, and a run stopped
    short keeps what it holds. An ``s3://``-style sink (no ``part_seconds``) is as before."""
    import stygig.batch as batch

    clock = [0.0]
    monkeypatch.setattr(batch, "_now", lambda: clock[0])
    staging = tmp_path / "out.parquet.parts"

    def names() -> list[str]:
        return sorted(p.name for p in staging.iterdir())

    def write(sink: PartsSink, indexes: range, at: float) -> None:
        clock[0] = at
        sink.write([(i, json.dumps({"index": i, "status": "ok"})) for i in indexes])

    sink = PartsSink(str(staging), 10, part_seconds=5.0)
    write(sink, range(0, 3), 0.0)
    write(sink, range(3, 4), 4.9)
    assert not staging.exists()
    write(sink, range(4, 6), 5.0)  # open 5 s: written
    write(sink, range(6, 12), 6.0)  # 6-9 close their range (10 records); 10-11 open a part
    assert names() == ["part-000000000-000000006.jsonl", "part-000000006-000000010.jsonl"]
    sink.close(False)  # stopped short: what it held is finished work, kept
    assert names()[-1] == "part-000000010-000000012.jsonl"

    again = PartsSink(str(staging), 10, part_seconds=5.0)
    assert again.done() == set(range(12))
    write(again, range(12, 14), 100.0)
    again.close(True)
    assert names()[-1] == "part-000000012-000000014.jsonl"
    _staged(tmp_path / "out.parquet")  # one after another, no gap, no overlap

    fixed = tmp_path / "prefix"
    whole = PartsSink(str(fixed), 10)
    write(whole, range(0, 4), 0.0)
    write(whole, range(4, 6), 1000.0)
    whole.close(False)  # a prefix's part covers its whole range, or is not written
    assert not fixed.exists()


def test_the_part_period_is_the_operators_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PART_SECONDS_ENV, "2.5")
    assert ParquetSink(tmp_path / "a.parquet").parts.part_seconds == 2.5
    monkeypatch.delenv(PART_SECONDS_ENV)
    assert ParquetSink(tmp_path / "a.parquet").parts.part_seconds == 20.0
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv(PART_SECONDS_ENV, bad)
        with pytest.raises(ConfigError, match=PART_SECONDS_ENV):
            ParquetSink(tmp_path / "a.parquet")
