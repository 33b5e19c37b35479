"""A batch run's hold on its output (:class:`stygig.batch.RunLock`): one run of an output at a
time, let go when the run ends however it ends (review, session 40: two runs of the same
command at once both appended every record). Two real processes: tests/integration/test_batch.py.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import pytest

from stygig.batch import BatchInput, RunInProgressError, RunLock, Tally, begin_run, run_record
from stygig.jobs.endpoint_batch import run_endpoint_batch


def _run(dst: str) -> dict[str, Any]:
    return run_record("src", dst, kind="manifest", by_photo=False, options={}, part_size=1000)


def _inputs() -> tuple[Any, int]:
    return iter([BatchInput(0, "k", "s", item_ids=("k",))]), 1


def test_one_run_of_an_output_at_a_time(tmp_path: Path) -> None:
    dst = str(tmp_path / "sub" / "out.jsonl")
    held = RunLock.take(dst)
    assert held.path == Path(f"{dst}.batch.lock") and held.path.exists()
    with pytest.raises(RunInProgressError, match="another batch run is writing") as refused:
        RunLock.take(dst)
    assert refused.value.exit_code == 8 and refused.value.code == "run_in_progress"
    with pytest.raises(RunInProgressError):  # nothing read or written of the held run
        begin_run(dst, _run(dst), overwrite=True, part_size=1000, inputs=_inputs)
    assert not Path(f"{dst}.batch.json").exists()
    held.release()
    held.release()  # once: later calls do nothing
    assert not held.path.exists()  # a finished run leaves no file beside its output
    again = RunLock.take(dst)
    again.release()
    remote = RunLock.take("s3://bucket/recs/")  # no lock in S3: parts are idempotent writes
    assert remote.path is None
    remote.release()


def test_a_run_holds_its_output_until_it_is_recorded_or_stops(tmp_path: Path) -> None:
    dst = str(tmp_path / "out.jsonl")
    tally = begin_run(dst, _run(dst), overwrite=False, part_size=1000, inputs=_inputs)
    assert isinstance(tally, Tally)
    with pytest.raises(RunInProgressError):
        RunLock.take(dst)
    tally.sink.close(True)
    with pytest.raises(RunInProgressError):  # complete, not yet recorded as such
        RunLock.take(dst)
    assert tally.finish(True).complete
    RunLock.take(dst).release()
    # A run that stops (an error, Ctrl-C) lets go when its sink is closed.
    other = str(tmp_path / "other.jsonl")
    stopped = begin_run(other, _run(other), overwrite=False, part_size=1000, inputs=_inputs)
    assert isinstance(stopped, Tally)
    stopped.sink.close(False)
    RunLock.take(other).release()

    def broken() -> tuple[Any, int]:
        raise OSError("input unreadable")

    with pytest.raises(OSError):  # a run that cannot start lets go too
        begin_run(dst, _run(dst), overwrite=True, part_size=1000, inputs=broken)
    RunLock.take(dst).release()


def test_a_lock_taken_on_a_file_its_holder_removed_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder removes the file as it lets go: a second run that opened it just before
    would hold a removed file, while a third made a new one; both would run."""
    dst = str(tmp_path / "out.jsonl")
    first = RunLock.take(dst)
    real = fcntl.flock
    calls = []

    def flock(fd: int, op: int) -> None:
        if not calls:
            first.release()  # between this run's open and its lock
        calls.append(fd)
        real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    second = RunLock.take(dst)
    monkeypatch.setattr(fcntl, "flock", real)
    assert len(calls) == 2  # taken on the removed file, then on the file there now
    with pytest.raises(RunInProgressError):
        RunLock.take(dst)
    second.release()


class _NoEndpoint:
    """An endpoint that must not be asked anything: the run is refused before."""

    endpoint_name = "shop-async"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the endpoint was used ({name}) by a run that is refused")


def test_an_endpoint_run_in_progress_is_refused_before_overwrite_removes_anything(
    tmp_path: Path,
) -> None:
    """`--overwrite` removed the run's receipts in the input prefix before the run started."""
    dst = str(tmp_path / "out.jsonl")
    held = RunLock.take(dst)
    try:
        endpoint: Any = _NoEndpoint()
        with pytest.raises(RunInProgressError):
            run_endpoint_batch(endpoint, str(tmp_path / "m.jsonl"), dst, overwrite=True)
    finally:
        held.release()
