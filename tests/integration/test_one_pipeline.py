"""One pipeline: the library, the CLI, the real-time server, an async job and a batch run give
the identical answer for the same photo and options (everything but the timings)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from stygig.batch import run_batch
from stygig.cli import main
from stygig.engine import Options, Query, Recommender
from tests.integration.test_jobs import async_server, job_status, wait_for

pytestmark = pytest.mark.slow

# Three questions: an outfit for a photo plus a catalogue item, visual search for a photo,
# and a shortlist ranked with MMR, unavailable items and the neighbour vote alone.
CASES = [
    ("blue-jeans.jpg", ("sku-0014",), {"k": 2, "k_total": 6, "seed": 3}),
    ("grey-shirt.jpg", (), {"mode": "similar", "k": 3, "k_total": 5, "use_color": False}),
    (
        "blue-jeans.jpg",
        (),
        {
            "k": 2,
            "k_total": 4,
            "diversity": 0.5,
            "include_unavailable": True,
            "use_category_head": False,
            "candidate_ids": ["sku-0001", "sku-0020", "sku-0031", "sku-0054", "sku-0090"],
        },
    ),
]


def _answer(data: dict[str, Any]) -> dict[str, Any]:
    """The answer without its timings, which differ run to run."""
    timings = data.pop("timings_ms")
    assert {"decode", "embed", "search", "vote", "score", "rank", "serialise", "total"} <= set(
        timings
    )
    return data


def _cli_args(photo: Path, items: tuple[str, ...], options: dict[str, Any]) -> list[str]:
    args = [str(photo), *(a for i in items for a in ("--item", i))]
    args += ["--k", str(options["k"]), "--k-total", str(options["k_total"])]
    if "mode" in options:
        args += ["--mode", options["mode"]]
    if "seed" in options:
        args += ["--seed", str(options["seed"])]
    if options.get("use_color") is False:
        args.append("--no-color")
    if "diversity" in options:
        args += ["--diversity", str(options["diversity"])]
    if options.get("include_unavailable"):
        args.append("--include-unavailable")
    if options.get("use_category_head") is False:
        args.append("--no-category-head")
    args += [a for c in options.get("candidate_ids", ()) for a in ("--candidate", c)]
    return args


def test_every_route_gives_the_same_answer(
    sample: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog, artifact = sample
    rec = Recommender.from_path(artifact)
    answers: dict[str, list[dict[str, Any]]] = {}
    photos = [catalog / "queries" / name for name, _, _ in CASES]

    answers["library"] = [
        _answer(
            rec.recommend(Query(images=(p,), item_ids=items), Options.from_dict(dict(o))).to_dict()
        )
        for p, (_, items, o) in zip(photos, CASES, strict=True)
    ]

    answers["cli"] = []
    for p, (_, items, o) in zip(photos, CASES, strict=True):
        capsys.readouterr()
        assert (
            main(["recommend", "--artifact", str(artifact), "--json", *_cli_args(p, items, o)]) == 0
        )
        printed = capsys.readouterr().out
        # The bytes the server sends (compact, one line), not a re-indented copy.
        assert printed.endswith("}\n") and "\n" not in printed[:-1]
        answers["cli"].append(_answer(json.loads(printed)))

    manifest = tmp_path / "inputs.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"id": f"q{n}", "image": str(p), "item_ids": list(items), "options": o})
            + "\n"
            for n, (p, (_, items, o)) in enumerate(zip(photos, CASES, strict=True))
        ),
        encoding="utf-8",
    )
    out = tmp_path / "batch.jsonl"
    run_batch(rec, str(manifest), str(out), progress=False)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["status"] for r in records] == ["ok"] * len(CASES), records
    answers["batch"] = [_answer(r["recommendation"]) for r in records]

    (tmp_path / "server").mkdir()
    with async_server(artifact, tmp_path / "server") as server:
        answers["server"], job_ids = [], []
        for p, (_, items, o) in zip(photos, CASES, strict=True):
            body = {"images_b64": [base64.b64encode(p.read_bytes()).decode()], **o}
            if items:
                body["item_ids"] = list(items)
            r = httpx.post(f"{server.url}/invocations", json=body, timeout=30)
            assert r.status_code == 200, r.text
            answers["server"].append(_answer(r.json()))
            submitted = httpx.post(f"{server.url}/async/invocations", json=body, timeout=30)
            assert submitted.status_code == 202, submitted.text
            job_ids.append(submitted.json()["InferenceId"])
        answers["async"] = []
        for job_id in job_ids:
            wait_for(lambda j=job_id: job_status(server.url, j)["Status"] == "succeeded")
            result = httpx.get(f"{server.url}/async/jobs/{job_id}/output", timeout=10).json()
            # A job's document is the answer signed with the job's id and token.
            assert result.pop("InferenceId") == job_id and result.pop("JobToken")
            answers["async"].append(_answer(result))

    reference = answers.pop("library")
    assert reference[0]["outfit"]["slots"] and reference[1]["mode"] == "similar"
    for route, got in answers.items():
        assert got == reference, f"{route} answers differently from the library"
