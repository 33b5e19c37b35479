"""``GET /async/jobs`` over HTTP: pages with a cursor to the end, bounded per request, and says
when the counts are lower bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from stygig.errors import StygigError
from stygig.jobs.store import JobSpec, JobStore, new_owner
from stygig.serving.async_api import AsyncConfig, AsyncJobs
from stygig.serving.responses import error_response


def _spec(job_id: str) -> JobSpec:
    return JobSpec("out/{id}.out", "out/{id}-error.out", input_body=b"x", id=job_id)


def test_listing_pages_to_the_end_and_flags_lower_bound_counts(tmp_path: Path) -> None:
    config = AsyncConfig(jobs_db=tmp_path / "jobs.db", output=str(tmp_path / "out"), list_jobs=True)
    jobs = AsyncJobs(config, lambda: None)  # not started: what is queued stays queued
    store = jobs.store
    assert isinstance(store, JobStore)
    store.count_limit = 3
    for i in range(5):
        store.submit(_spec(f"j{i}"))
    me = new_owner()
    (first,) = store.claim(me)
    store.finish(first.id, me, 1, "succeeded")
    app = FastAPI()
    app.include_router(jobs.router)

    @app.exception_handler(StygigError)
    async def _error(request: Request, exc: StygigError) -> Response:
        return error_response(exc)

    def listing(**query: Any) -> Any:
        answer = client.get("/async/jobs", params=query)
        assert answer.status_code == 200, answer.text
        return answer.json()

    try:
        with TestClient(app) as client:
            seen, after = [], 0
            while after is not None:
                body = listing(limit=2, after=after)
                seen += [j["InferenceId"] for j in body["jobs"]]
                after = body["next_after"]
            assert seen == [f"j{i}" for i in range(5)]
            assert body["counts"] == {"queued": 3, "running": 0, "succeeded": 1, "failed": 0}
            assert body["counts_complete"] is False  # 4 queued, counted up to 3
            done = listing(status="succeeded")
            assert [j["InferenceId"] for j in done["jobs"]] == ["j0"]
            assert done["next_after"] is None
            assert client.get("/async/jobs", params={"limit": 1001}).status_code == 422
            bad = client.get("/async/jobs", params={"status": "lost"})
            assert bad.status_code < 500 and "lost" not in bad.text
            twice = client.get("/async/jobs?status=succeeded&status=failed")  # review, s45
            assert twice.status_code == 422 and "given twice" in twice.text
            assert client.get("/async/jobs", params={"state": "queued"}).status_code == 422
    finally:
        store.close()
