"""A housekeeping chore that keeps failing is logged once with its traceback, then one line a
minute, then its recovery (review, session 54: a job store on a full disk logged a traceback
every 0.25 s, 8 KB/s onto that same disk)."""

from __future__ import annotations

import logging

import pytest

from stygig.jobs import worker


def test_a_repeating_failure_is_logged_once_a_minute_and_its_recovery_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(worker, "_clock", lambda: clock[0])
    monkeypatch.setattr(worker, "_FAILURES", worker._Failures())
    caplog.set_level(logging.WARNING, logger="stygig.jobs.worker")

    def fail(what: str) -> None:
        with worker._chore(what):
            raise OSError(28, "No space left on device")

    for _ in range(241):  # a minute of ticks every 0.25 s, and one
        fail("sending notifications")
        clock[0] += 0.25
    fail("claiming a job")  # another chore: its own first line
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines[0] == ("ERROR", "job housekeeping failed: sending notifications", True)
    assert lines[1][1].startswith(
        "job housekeeping still failing: sending notifications (240 more times in 60 s): "
    )
    assert "No space left" in lines[1][1] and not lines[1][2]
    assert lines[2] == ("ERROR", "job housekeeping failed: claiming a job", True)
    assert len(lines) == 3
    with worker._chore("sending notifications"):
        pass
    with worker._chore("sending notifications"):
        pass
    assert [r.getMessage() for r in caplog.records[3:]] == [
        "job housekeeping works again: sending notifications"
    ]
    fail("sending notifications")  # failing again soon after the recovery: counted, quiet
    assert len(caplog.records) == 4
    clock[0] += 61  # then a whole period of working: forgotten, a new failure is a first one
    with worker._chore("sending notifications"):
        pass
    fail("sending notifications")
    assert len(caplog.records) == 5 and caplog.records[-1].exc_info is not None


def test_a_chore_that_alternates_writes_a_line_or_two_a_minute(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Review of session 54's first version: every success reset the count, so a chore that
    failed every other tick logged a traceback and a recovery line each time (41 KB a minute)."""
    clock = [1000.0]
    monkeypatch.setattr(worker, "_clock", lambda: clock[0])
    monkeypatch.setattr(worker, "_FAILURES", worker._Failures())
    caplog.set_level(logging.WARNING, logger="stygig.jobs.worker")
    for tick in range(2400):  # ten minutes of ticks every 0.25 s, failing every other one
        with worker._chore("sending notifications"):
            if tick % 2 == 0:
                raise OSError(28, "No space left on device")
        clock[0] += 0.25
    assert 10 <= len(caplog.records) <= 21  # at most about two lines a minute
    assert sum(r.exc_info is not None for r in caplog.records) <= 11
