"""The deploy lifecycle leaves nothing stale and nothing unscaled (moto, in-process).

After every step the whole account is listed: models, endpoint configs, endpoints, scalable
targets, scaling policies and alarms, and :func:`assert_clean` checks that only what the live
endpoint runs on is left, and that every variant expected to autoscale does. moto lacks
``UpdateEndpoint``: the ``aws`` fixture of ``test_deploy_moto`` applies it to moto's backend.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from stygig.cli import main
from tests.integration import test_deploy_moto as base
from tests.integration.test_deploy_moto import IMAGE, REGION, put_model

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:botocore.*")

# The fixtures of test_deploy_moto: moto with UpdateEndpoint, the sample artifact, its archive.
aws = base.aws
artifact = base.artifact
archive = base.archive


def _c(service: str) -> Any:
    return boto3.client(service, region_name=REGION)


def inventory() -> dict[str, Any]:
    """Everything the lifecycle can leave behind, account-wide."""
    sm, aas, cw = _c("sagemaker"), _c("application-autoscaling"), _c("cloudwatch")
    return {
        "models": sorted(m["ModelName"] for m in sm.list_models()["Models"]),
        "configs": sorted(
            c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]
        ),
        "endpoints": sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]),
        "targets": {
            t["ResourceId"]: (t["MinCapacity"], t["MaxCapacity"])
            for t in aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
        },
        "policies": aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"],
        "alarms": cw.describe_alarms()["MetricAlarms"],
    }


def _variants(endpoint: str) -> list[dict[str, Any]]:
    sm = _c("sagemaker")
    name = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    return list(sm.describe_endpoint_config(EndpointConfigName=name)["ProductionVariants"])


def _rid(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def assert_clean(endpoint: str, scaled: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Only the live endpoint's config and models are left, the variants in ``scaled`` (and
    no other) are scalable targets with those bounds and policies, alarms name live variants
    and act only on policies that exist. Returns the inventory."""
    inv = inventory()
    sm = _c("sagemaker")
    current = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    variants = _variants(endpoint)
    live = {v["VariantName"] for v in variants}
    assert inv["endpoints"] == [endpoint]
    assert inv["configs"] == [current]
    assert inv["models"] == sorted({v["ModelName"] for v in variants})
    assert set(scaled) <= live
    assert inv["targets"] == {_rid(endpoint, v): bounds for v, bounds in scaled.items()}
    policy_arns = {p["PolicyARN"] for p in inv["policies"]}
    for policy in inv["policies"]:
        assert policy["ResourceId"] in inv["targets"], policy["PolicyName"]
    for v in scaled:
        assert any(p["ResourceId"] == _rid(endpoint, v) for p in inv["policies"]), v
    for alarm in inv["alarms"]:
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dims["EndpointName"] == endpoint
        assert dims.get("VariantName", next(iter(live))) in live, alarm["AlarmName"]
        for action in alarm["AlarmActions"]:
            if ":scalingPolicy:" in action:
                assert action in policy_arns, alarm["AlarmName"]
    return inv


def assert_empty() -> None:
    inv = inventory()
    assert {k: v for k, v in inv.items() if v} == {}


def _variant_alarms(inv: dict[str, Any], variant: str) -> dict[str, dict[str, Any]]:
    return {
        a["MetricName"]: a
        for a in inv["alarms"]
        if {"Name": "VariantName", "Value": variant} in a["Dimensions"]
    }


def _model(name: str) -> dict[str, Any]:
    return dict(_c("sagemaker").describe_model(ModelName=name)["PrimaryContainer"])


# --- point 2: the container's environment, async limits ---------------------------------------


def test_deploy_flags_are_checked_before_anything_is_made(
    aws: None, archive: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review, session 53: scaling bounds were checked once the endpoint was InService (then
    left without scaling, and the same command refused as "already exists"); NaN passed as a
    target; a bearer token in the environment made an endpoint that answered /ping and
    refused every request, with the token in its description."""
    uri = put_model(archive, "early/model.tar.gz")
    cases = (
        (["--max-instances", "2", "--min-instances", "5"], "--min-instances"),
        (["--max-instances", "2", "--target-invocations", "nan"], "scaling target"),
        (["--max-instances", "3", "--min-instances", "0"], "--min-instances >= 1"),
        (["--max-instances", "0"], "--max-instances"),
        (["--instance-count", "5", "--max-instances", "3"], "above --max-instances"),
        (["--env", "STYGIG_AUTH_TOKEN=abcdefghijklmnopqrstuvwxyz"], "no bearer token"),
        (["--env", "STYGIG_SERVE_ARGS=--auth-token-file /run/t"], "no bearer token"),
    )
    for extra, said in cases:
        argv = ["deploy", "sync", "--model-uri", uri, "--endpoint-name", "early", *extra]
        assert main(argv) == 2, extra
        err = capsys.readouterr().err
        assert said in err and "abcdefghij" not in err and "Traceback" not in err, (extra, err)
    sm = _c("sagemaker")
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    # A failed endpoint: the way out is named (--update and deploy update both waited for an
    # InService that never comes).
    from moto.sagemaker.models import sagemaker_backends

    assert main(["deploy", "sync", "--model-uri", uri, "--endpoint-name", "sunk"]) == 0
    endpoint: Any = sagemaker_backends["123456789012"][REGION].endpoints["sunk"]
    endpoint.endpoint_status, endpoint.failure_reason = "Failed", "the ping health check failed"
    for extra in ([], ["--update"]):
        argv = ["deploy", "sync", "--model-uri", uri, "--endpoint-name", "sunk", *extra]
        assert main(argv) == 2
        assert "stygig deploy delete --endpoint-name sunk" in capsys.readouterr().err


def test_env_flags_and_async_limits(
    aws: None, archive: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from stygig.cli import _parser
    from stygig.serving.app import ServerConfig

    uri = put_model(archive, "a/model.tar.gz")
    assert main(["deploy", "async", "--model-uri", uri, "--endpoint-name", "bulk",
                 "--s3-output-path", "s3://out/r/", "--env", "LOG_LEVEL=debug",
                 "--env", "STYGIG_SERVE_ARGS=--max-batch 16"]) == 0  # fmt: skip
    assert "bodies up to 1024 MB, 3600 s per invocation" in capsys.readouterr().out
    env = _model(_variants("bulk")[0]["ModelName"])["Environment"]
    assert env["LOG_LEVEL"] == "debug"
    # The flags the container's `serve` script passes on parse, and the server takes them;
    # the user's own flags come last, so they win.
    args = _parser().parse_args(["serve", *shlex.split(env["STYGIG_SERVE_ARGS"])])
    assert (args.max_body_mb, args.timeout, args.max_batch) == (1024.0, 3600.0, 16)
    ServerConfig(
        artifact=Path("."),
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_body_bytes_in_flight=int(args.max_bodies_mb * 2**20),
        request_timeout_s=args.timeout,
        body_timeout_s=args.body_timeout,
    )
    # Real-time: exactly the --env given, no async limits.
    assert main(["deploy", "sync", "--model-uri", uri, "--endpoint-name", "rt",
                 "--env", "A=1"]) == 0  # fmt: skip
    assert _model(_variants("rt")[0]["ModelName"])["Environment"] == {"A": "1"}
    # A canary keeps the live model's environment, with --env on top.
    assert main(["deploy", "update", "--endpoint-name", "rt", "--model-uri", uri,
                 "--traffic", "10", "--env", "B=2"]) == 0  # fmt: skip
    assert _model(_variants("rt")[1]["ModelName"])["Environment"] == {"A": "1", "B": "2"}
    for bad in ("1X=2", "NOEQUALS", "A-B=1", "API_TOKEN:hunter2secret"):
        assert main(["deploy", "sync", "--model-uri", uri, "--endpoint-name", "x",
                     "--env", bad]) == 2  # fmt: skip
        err = capsys.readouterr().err
        assert "expected KEY=VALUE" in err and "hunter2" not in err  # (review, session 49)
    # Review, session 49: serve flags the container would refuse made an endpoint that never
    # started; they are refused here, before anything is made.
    for flags, said in (("--max-batch 0", "argument --max-batch"), ("--nope", "--nope")):
        assert main(["deploy", "sync", "--model-uri", uri, "--endpoint-name", "x",
                     "--env", f"STYGIG_SERVE_ARGS={flags}"]) == 2  # fmt: skip
        assert "--env STYGIG_SERVE_ARGS: " in (err := capsys.readouterr().err) and said in err
    assert main(["deploy", "sync", "--model-uri", uri, "--endpoint-name", "x",
                 "--env", "A=1", "--env", "A=secret"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "given twice" in err and "secret" not in err
    assert "x" not in inventory()["endpoints"]


# --- point 3: blue/green with autoscaling and alarms, nothing stale --------------------------


def test_sync_lifecycle_keeps_scaling_and_alarms(
    aws: None, archive: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2, v3 = (put_model(archive, f"v{n}/model.tar.gz") for n in range(1, 4))
    assert main(["deploy", "sync", "--model-uri", v1, "--endpoint-name", "shop",
                 "--max-instances", "3", "--min-instances", "2"]) == 0  # fmt: skip
    blue = _variants("shop")[0]["VariantName"]
    assert main(["alarms", "create", "--endpoint-name", "shop", "--latency-ms", "300",
                 "--rate-5xx", "0.02"]) == 0  # fmt: skip
    assert "notify nobody" in capsys.readouterr().out
    assert_clean("shop", {blue: (2, 3)})
    # Review, session 53: alarms that can never fire were made without a word.
    alarm = ["alarms", "create", "--endpoint-name", "shop"]
    assert main([*alarm, "--variant", "nosuchvariant"]) == 2
    assert f"its variants: {blue}" in capsys.readouterr().err
    for flag, value in (("--rate-4xx", "5"), ("--rate-5xx", "-1"), ("--latency-ms", "nan")):
        with pytest.raises(SystemExit):
            main([*alarm, flag, value])
        assert f"argument {flag}" in capsys.readouterr().err
    assert_clean("shop", {blue: (2, 3)})

    # A canary gets the live variant's scaling; the old single-variant config goes.
    assert main(["deploy", "update", "--endpoint-name", "shop", "--model-uri", v2,
                 "--traffic", "10"]) == 0  # fmt: skip
    green = _variants("shop")[1]["VariantName"]
    inv = assert_clean("shop", {blue: (2, 3), green: (2, 3)})
    assert len(inv["models"]) == 2 and len(_variant_alarms(inv, blue)) == 3

    # Promote: blue's scaling and alarms (same thresholds) are green's, blue is gone.
    assert main(["deploy", "promote", "--endpoint-name", "shop"]) == 0
    assert [v["VariantName"] for v in _variants("shop")] == [green]
    inv = assert_clean("shop", {green: (2, 3)})
    alarms = _variant_alarms(inv, green)
    assert set(alarms) == {"ModelLatency", "Invocation4XXErrors", "Invocation5XXErrors"}
    assert alarms["ModelLatency"]["Threshold"] == 300_000.0
    assert alarms["Invocation5XXErrors"]["Threshold"] == 0.02
    assert all(a["AlarmName"].startswith(f"shop-{green}-") for a in alarms.values())
    tracking = inv["policies"][0]["TargetTrackingScalingPolicyConfiguration"]
    from stygig.deploy.advisor import load_matrix, scaling_target

    advised = scaling_target(load_matrix(), "ml.g4dn.xlarge", None)  # the encoder unnamed
    assert advised is not None and tracking["TargetValue"] == advised[0] > 1000

    # Rollback: the candidate and its scaling go, the live variant keeps its own.
    assert main(["deploy", "update", "--endpoint-name", "shop", "--model-uri", v3,
                 "--traffic", "25", "--no-wait"]) == 2  # fmt: skip
    assert "drop --no-wait" in capsys.readouterr().err
    assert_clean("shop", {green: (2, 3)})
    assert main(["deploy", "update", "--endpoint-name", "shop", "--model-uri", v3,
                 "--traffic", "25"]) == 0  # fmt: skip
    candidate = _variants("shop")[1]["VariantName"]
    assert main(["deploy", "update", "--endpoint-name", "shop", "--traffic", "50"]) == 0
    assert main(["alarms", "create", "--endpoint-name", "shop", "--variant", candidate]) == 0
    assert_clean("shop", {green: (2, 3), candidate: (2, 3)})
    assert main(["deploy", "rollback", "--endpoint-name", "shop"]) == 0
    inv = assert_clean("shop", {green: (2, 3)})
    assert set(_variant_alarms(inv, green)) == set(alarms) and len(inv["alarms"]) == 3
    assert _variant_alarms(inv, green)["ModelLatency"]["Threshold"] == 300_000.0

    # Delete: scaling, alarms, configs and models with it; nothing left anywhere.
    capsys.readouterr()
    assert main(["deploy", "delete", "--endpoint-name", "shop"]) == 0
    out = capsys.readouterr().out
    assert "deleted scalable target" in out and "deleted alarm" in out
    assert_empty()


def test_async_lifecycle_moves_the_wake_up_alarm(aws: None, archive: Any) -> None:
    v1, v2 = (put_model(archive, f"v{n}/model.tar.gz") for n in (1, 2))
    assert main(["deploy", "async", "--model-uri", v1, "--endpoint-name", "bulk",
                 "--s3-output-path", "s3://out/r/"]) == 0  # fmt: skip
    blue = _variants("bulk")[0]["VariantName"]
    assert main(["alarms", "create", "--endpoint-name", "bulk"]) == 0
    inv = assert_clean("bulk", {blue: (0, 2)})
    assert len(inv["alarms"]) == 4  # the wake-up alarm and three on the variant

    def wake_actions() -> list[str]:
        alarm = next(
            a for a in inventory()["alarms"] if a["MetricName"] == "HasBacklogWithoutCapacity"
        )
        return [a.split("/variant/")[1].split(":")[0] for a in alarm["AlarmActions"]]

    assert wake_actions() == [blue]
    assert main(["deploy", "update", "--endpoint-name", "bulk", "--model-uri", v2,
                 "--traffic", "20"]) == 0  # fmt: skip
    green = _variants("bulk")[1]["VariantName"]
    inv = assert_clean("bulk", {blue: (0, 2), green: (0, 2)})
    assert {p["PolicyType"] for p in inv["policies"] if green in p["ResourceId"]} == {
        "TargetTrackingScaling",
        "StepScaling",
    }
    assert sorted(wake_actions()) == sorted([blue, green])  # a backlog wakes both
    # The candidate keeps the async limits in its environment.
    assert (
        "--max-body-mb 1024"
        in _model(_variants("bulk")[1]["ModelName"])["Environment"]["STYGIG_SERVE_ARGS"]
    )
    assert main(["deploy", "promote", "--endpoint-name", "bulk"]) == 0
    inv = assert_clean("bulk", {green: (0, 2)})
    assert wake_actions() == [green] and len(inv["alarms"]) == 4
    assert main(["deploy", "delete", "--endpoint-name", "bulk"]) == 0
    assert_empty()


class _Refusing:
    """``update_endpoint`` that AWS refuses."""

    def __call__(self, *_: Any, **__: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        raise ClientError(
            {"Error": {"Code": "ValidationException", "Message": "no capacity"}},
            "UpdateEndpoint",
        )


def _rolling_back(self: Any, EndpointName: str, EndpointConfigName: str) -> dict[str, Any]:
    """``update_endpoint`` whose rollout fails: SageMaker rolls back to the old config."""
    from moto.sagemaker.models import sagemaker_backends

    endpoint: Any = sagemaker_backends["123456789012"][REGION].endpoints[EndpointName]
    endpoint.failure_reason = "the new fleet failed its health checks"
    return {"EndpointArn": endpoint.arn}


@pytest.mark.parametrize("failure", ["api", "rollout"])
def test_failed_update_leaves_nothing_behind(
    aws: None,
    archive: Any,
    failure: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1, v2 = (put_model(archive, f"v{n}/model.tar.gz") for n in (1, 2))
    assert main(["deploy", "sync", "--model-uri", v1, "--endpoint-name", "shop",
                 "--max-instances", "2"]) == 0  # fmt: skip
    assert main(["alarms", "create", "--endpoint-name", "shop"]) == 0
    live = _variants("shop")[0]["VariantName"]
    before = assert_clean("shop", {live: (1, 2)})
    broken = _Refusing() if failure == "api" else _rolling_back
    monkeypatch.setattr(base._WithUpdate, "update_endpoint", broken)
    capsys.readouterr()
    # A canary, and an in-place switch to another instance type (which takes the scaling
    # off first): each fails, and each leaves the endpoint as it was, still scaled.
    for args in (
        ["deploy", "update", "--endpoint-name", "shop", "--model-uri", v2, "--traffic", "10"],
        ["deploy", "sync", "--endpoint-name", "shop", "--model-uri", v2, "--update",
         "--instance-type", "ml.g4dn.2xlarge"],
    ):  # fmt: skip
        assert main(args) == 7
        err = capsys.readouterr().err
        assert ("no capacity" if failure == "api" else "did not take") in err
        after = assert_clean("shop", {live: (1, 2)})
        assert after["models"] == before["models"] and after["configs"] == before["configs"]
        assert len(after["alarms"]) == 3


# --- point 4: preflight ------------------------------------------------------------------------


def _tampered(folder: Path) -> bytes:
    """The artifact as a .tar.gz with one file changed after its manifest was written."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(folder.iterdir()):
            data = f.read_bytes()
            if f.name == "items.jsonl":
                data = data.replace(b"shirt", b"skirt", 1) + b"\n"
            info = tarfile.TarInfo(f.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _packed(folder: Path, manifest: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    """The artifact's files (checksums intact) as a .tar.gz with this manifest.json instead."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        files = {f.name: f.read_bytes() for f in sorted(folder.iterdir())}
        for name, data in {**files, "manifest.json": manifest, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_preflight_applies_the_containers_own_manifest_checks(
    aws: None, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review (session 35): ``--verify-archive full`` passed archives the container's loader
    refuses at start (a newer format version, a listed file in a folder, ``"bytes": true``),
    so the endpoint was made and failed later; a manifest too deep to parse was exit 7."""
    s3 = _c("s3")
    s3.create_bucket(Bucket="models")
    manifest = json.loads((artifact / "manifest.json").read_text())
    newer = {**manifest, "format_version": 999}
    one = next(iter(manifest["files"]))
    bool_bytes = {**manifest, "files": {**manifest["files"], one: {
        **manifest["files"][one], "bytes": True}}}  # fmt: skip
    nested = b"[" * 100_000 + b"]" * 100_000
    # Session 38 (s37's review: `package` packed these; an archive already in S3 still passed
    # full verification): items cut to 60 and their checksum re-recorded: every file matches
    # the manifest, but not the 131 embeddings beside it, which only a load finds.
    lines = (artifact / "items.jsonl").read_bytes().splitlines(keepends=True)
    cut = b"".join(lines[:60])
    recut = {**manifest, "files": {**manifest["files"], "items.jsonl": {
        **manifest["files"]["items.jsonl"], "bytes": len(cut),
        "sha256": hashlib.sha256(cut).hexdigest()}}}  # fmt: skip
    cases = {
        "recut": (
            json.dumps(recut).encode(),
            {"items.jsonl": cut},
            "refused by the container's loader",
        ),
        "newer": (json.dumps(newer).encode(), None, "reads up to version"),
        "bool": (json.dumps(bool_bytes).encode(), None, "needs a 'sha256' string and a 'bytes'"),
        "nested": (nested, None, "is not valid JSON"),
        "folder": (json.dumps(manifest).encode(), {"sub/x": b"x"}, "not a plain file at its root"),
    }
    for name, (raw, extra, expected) in cases.items():
        s3.put_object(
            Bucket="models", Key=f"{name}/model.tar.gz", Body=_packed(artifact, raw, extra)
        )
        argv = ["deploy", "sync", "--endpoint-name", name, "--verify-archive", "full",
                "--model-uri", f"s3://models/{name}/model.tar.gz"]  # fmt: skip
        assert main(argv) == 4, name
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (name, err)
        assert "stygig-archive-" not in err  # never the temporary folder
    assert inventory()["models"] == []


def test_preflight_refuses_a_decompression_bomb(
    aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review (session 35): a 1 MB object inflating to 1 GB was read whole (6 s; at the
    2 GB limit it would have been hours). An archive may inflate to 20 times its size."""
    s3 = _c("s3")
    s3.create_bucket(Bucket="models")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("embeddings.npy")
        info.size = 64 << 20  # zeros: 64 MB from about 64 KB
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    s3.put_object(Bucket="models", Key="bomb/model.tar.gz", Body=buf.getvalue())
    # tar's own headers count too: a PAX header is read whole before its member (code
    # review: 300 MB of one took 5 s and 670 MB of memory before the first version refused it)
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 64 << 20
    pax = io.BytesIO()
    with gzip.GzipFile(fileobj=pax, mode="wb", mtime=0) as gz:
        gz.write(header.tobuf(tarfile.USTAR_FORMAT) + bytes(header.size + 1024))
    s3.put_object(Bucket="models", Key="pax/model.tar.gz", Body=pax.getvalue())
    for key in ("bomb", "pax"):
        argv = ["deploy", "sync", "--endpoint-name", key, "--model-uri",
                f"s3://models/{key}/model.tar.gz"]  # fmt: skip
        assert main(argv) == 4
        assert "inflates to more than 20 times its size" in capsys.readouterr().err
    assert inventory()["models"] == []


def test_preflight_refuses_sparse_members_and_sizes_over_the_bound_before_writing(
    aws: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review (session 41): a GNU sparse member's holes are made by tarfile, not inflated, so
    no bound counted them (127 bytes wrote 300 MB into the unpack folder); a member declaring
    more than the bound is refused before a byte of it is written."""
    if shutil.which("tar") is None:
        pytest.skip("no tar command to write a sparse member")
    s3 = _c("s3")
    s3.create_bucket(Bucket="models")
    (tmp_path / "x").mkdir()
    with (tmp_path / "x" / "embeddings.npy").open("wb") as f:
        f.truncate(40 << 20)  # holes: 40 MB from a few bytes
    sparse = tmp_path / "sparse.tar.gz"
    argv = ["tar", "--sparse", "--format=gnu", "-czf", str(sparse), "-C", str(tmp_path / "x")]
    subprocess.run([*argv, "embeddings.npy"], check=True)
    s3.put_object(Bucket="models", Key="sparse/model.tar.gz", Body=sparse.read_bytes())
    declared = io.BytesIO()
    with gzip.GzipFile(fileobj=declared, mode="wb", mtime=0) as gz:
        header = tarfile.TarInfo("embeddings.npy")
        header.size = 1 << 30  # claimed, never sent
        gz.write(header.tobuf(tarfile.PAX_FORMAT) + bytes(4096))
    s3.put_object(Bucket="models", Key="declared/model.tar.gz", Body=declared.getvalue())
    expected = {"sparse": "as a sparse file", "declared": "inflates to more than 20 times"}
    for key, why in expected.items():
        argv = ["deploy", "sync", "--endpoint-name", key, "--verify-archive", "full",
                "--model-uri", f"s3://models/{key}/model.tar.gz"]  # fmt: skip
        assert main(argv) == 4
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err, (key, err)
    assert inventory()["models"] == []


def test_preflight_refuses_before_creating_anything(
    aws: None, archive: Any, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = put_model(archive, "ok/model.tar.gz")
    s3 = _c("s3")
    cmd = ["deploy", "sync", "--endpoint-name", "shop", "--model-uri"]

    def refused(model_uri: str, *extra: str, code: int = 2) -> str:
        assert main([*cmd, model_uri, *extra]) == code
        assert inventory()["models"] == []
        return capsys.readouterr().err

    assert "s3://models/none.tar.gz does not exist" in refused("s3://models/none.tar.gz")
    assert "is not an ECR image" in refused(uri, "--image-uri", "nginx:latest")
    assert "is not an ECR image" in refused(uri, "--image-uri", IMAGE.replace(".ecr.", ".ecs."))
    other = IMAGE.replace("us-east-1", "eu-west-1")
    assert "SageMaker pulls images from its own region" in refused(uri, "--image-uri", other)
    assert "is not an IAM role ARN" in refused(uri, "--role", "stygig-role")
    # Archives without the upload record are read whole and checked against their manifest.
    s3.put_object(Bucket="models", Key="bad/model.tar.gz", Body=_tampered(artifact))
    err = refused("s3://models/bad/model.tar.gz", code=4)
    assert "'items.jsonl', which does not match its checksum" in err
    s3.put_object(Bucket="models", Key="junk/model.tar.gz", Body=b"not a tarball")
    assert "is not a readable .tar.gz" in refused("s3://models/junk/model.tar.gz", code=4)
    s3.put_object(Bucket="models", Key="big/model.tar.gz", Body=archive.path.read_bytes())
    big = "s3://models/big/model.tar.gz"
    assert "--verify-archive skip" in refused(big, "--verify-max-mb", "0", code=4)
    # An upload record that the stored bytes do not match.
    s3.put_object(
        Bucket="models",
        Key="lie/model.tar.gz",
        Body=archive.path.read_bytes(),
        Metadata={"stygig-sha256": "0" * 64},
    )
    assert "differs from what" in refused("s3://models/lie/model.tar.gz", code=4)
    # Accepted: the recorded upload (HEAD only), the unrecorded one read whole, a skip.
    assert main([*cmd, uri]) == 0
    assert "sha256 recorded at upload = S3's checksum" in capsys.readouterr().out
    for name, extra, how in (
        ("big", [], "every file matches the manifest inside"),
        ("bad", ["--verify-archive", "skip"], "not verified"),
    ):
        args = ["deploy", "sync", "--endpoint-name", name, "--model-uri",
                f"s3://models/{name}/model.tar.gz", *extra]  # fmt: skip
        assert main(args) == 0
        assert how in capsys.readouterr().out
    for name in ("big", "bad"):
        assert main(["deploy", "delete", "--endpoint-name", name]) == 0


def test_existing_endpoint_needs_update_which_switches_in_place(
    aws: None, archive: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = (put_model(archive, f"v{n}/model.tar.gz") for n in (1, 2))
    assert main(["deploy", "sync", "--model-uri", v1, "--endpoint-name", "shop",
                 "--max-instances", "4"]) == 0  # fmt: skip
    assert main(["alarms", "create", "--endpoint-name", "shop"]) == 0
    variant = _variants("shop")[0]
    before = assert_clean("shop", {variant["VariantName"]: (1, 4)})
    capsys.readouterr()
    assert main(["deploy", "sync", "--model-uri", v2, "--endpoint-name", "shop"]) == 2
    err = capsys.readouterr().err
    assert "endpoint shop already exists" in err and "--update" in err
    assert inventory()["models"] == before["models"]
    assert main(["deploy", "sync", "--model-uri", v2, "--endpoint-name", "new", "--update"]) == 2
    assert "drop --update to create it" in capsys.readouterr().err
    # Another instance type under autoscaling: scaling comes off for the switch, then back.
    assert main(["deploy", "sync", "--model-uri", v2, "--endpoint-name", "shop", "--update",
                 "--instance-type", "ml.g4dn.2xlarge"]) == 0  # fmt: skip
    now = _variants("shop")[0]
    assert now["VariantName"] == variant["VariantName"] and now["InstanceType"] == "ml.g4dn.2xlarge"
    assert _model(now["ModelName"])["ModelDataUrl"] == v2
    inv = assert_clean("shop", {variant["VariantName"]: (1, 4)})
    assert len(inv["alarms"]) == 3 and inv["models"] != before["models"]
    # An async deployment cannot replace a real-time endpoint in place.
    assert main(["deploy", "async", "--model-uri", v2, "--endpoint-name", "shop", "--update",
                 "--s3-output-path", "s3://out/r/"]) == 2  # fmt: skip
    assert "cannot change kind in place" in capsys.readouterr().err
    assert_clean("shop", {variant["VariantName"]: (1, 4)})


def test_delete_cleans_leftovers_of_a_half_deleted_endpoint(aws: None, archive: Any) -> None:
    uri = put_model(archive, "v1/model.tar.gz")
    assert main(["deploy", "sync", "--model-uri", uri, "--endpoint-name", "shop",
                 "--max-instances", "2"]) == 0  # fmt: skip
    assert main(["alarms", "create", "--endpoint-name", "shop"]) == 0
    assert main(["deploy", "sync", "--model-uri", uri, "--endpoint-name", "shop-two"]) == 0
    _c("sagemaker").delete_endpoint(EndpointName="shop")  # by hand: all the rest is left
    assert main(["deploy", "delete", "--endpoint-name", "shop"]) == 0
    # The other endpoint, whose name starts the same, is untouched.
    assert_clean("shop-two", {})
    assert main(["deploy", "delete", "--endpoint-name", "shop-two"]) == 0
    assert_empty()


# --- point 5: the pipeline ---------------------------------------------------------------------


def _queue_response(times: int) -> None:
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    body = {
        "mode": "outfit",
        "query": [{"category": "shirt", "category_source": "vote", "votes": {"shirt": 4},
                   "rgb": [10, 20, 30]}],
        "items": [{"id": "a", "rgb": [1, 2, 3], "boost": 1.2}],
    }  # fmt: skip
    backend = sagemakerruntime_backends["123456789012"][REGION]
    for _ in range(times):
        backend.results_queue.append((json.dumps(body), "application/json", "", ""))


def test_pipeline_runs_resumes_and_updates(
    aws: None,
    sample: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    catalog_dir = sample[0]
    csv = next(catalog_dir.glob("*.csv"))
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"not a jpeg: moto decodes bodies as UTF-8")
    _c("s3").create_bucket(Bucket="models")
    work = tmp_path / "work"
    cmd = ["deploy", "pipeline", "--endpoint-name", "pipe", "--catalog", str(csv),
           "--encoder", "tiny", "--work-dir", str(work), "--upload", "s3://models/pipe/",
           "--check-image", str(photo), "--max-instances", "2",
           "--target-invocations", "600"]  # fmt: skip
    # Without a target, an encoder the advisor has no figures for is refused before step 1.
    assert main(cmd[:-2]) == 2
    assert "pass --target-invocations N" in capsys.readouterr().err and not work.exists()
    _queue_response(4)
    assert main(cmd) == 0
    out = capsys.readouterr().out
    for n, step in enumerate(("build", "package", "upload", "deploy", "wait", "check"), 1):
        assert f"[{n}/6] {step}: " in out
    assert "ok (rgb triples" in out and "endpoint pipe: ready" in out
    state = json.loads((work / "pipeline-state.json").read_text())
    steps = state["steps"]
    assert set(steps) == {"build", "package", "upload", "deploy", "wait", "check"}
    sha = steps["package"]["outputs"]["sha256"]
    assert steps["upload"]["outputs"]["model_uri"] == f"s3://models/pipe/{sha[:12]}/model.tar.gz"
    variant = _variants("pipe")[0]["VariantName"]
    assert_clean("pipe", {variant: (1, 2)})

    # A rerun skips what still holds; wait and check run again.
    assert main(cmd) == 0
    out = capsys.readouterr().out
    for step in ("build", "package", "upload", "deploy"):
        assert f"{step}: skipped" in out
    assert "[6/6] check: " in out

    # The archive deleted: packed again, byte for byte the same, so nothing after it reruns.
    (work / "model.tar.gz").unlink()
    assert main(cmd) == 0
    out = capsys.readouterr().out
    assert "[2/6] package: " in out and "package: skipped" not in out
    assert "upload: skipped" in out and "deploy: skipped" in out

    # A changed catalogue: a new archive and URI; the live endpoint is not replaced without
    # --update, and with it is switched in place, the old model and config pruned.
    lines = csv.read_text(encoding="utf-8").splitlines(keepends=True)
    smaller = tmp_path / "catalog.csv"
    smaller.write_text("".join(lines[:-1]), encoding="utf-8")
    cmd2 = [*cmd[:5], str(smaller), *cmd[6:], "--images", str(catalog_dir)]
    assert main(cmd2) == 2
    assert "endpoint pipe already exists" in capsys.readouterr().err
    assert main([*cmd2, "--update"]) == 0
    out = capsys.readouterr().out
    assert "switched pipe" in out and "pruned model" in out
    new = json.loads((work / "pipeline-state.json").read_text())["steps"]
    assert new["package"]["outputs"]["sha256"] != sha
    assert _model(_variants("pipe")[0]["ModelName"])["ModelDataUrl"].endswith(
        f"{new['package']['outputs']['sha256'][:12]}/model.tar.gz"
    )
    assert_clean("pipe", {variant: (1, 2)})
    assert main(["deploy", "delete", "--endpoint-name", "pipe"]) == 0
    assert_empty()


def test_pipeline_async_from_an_artifact(
    aws: None, artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _c("s3").create_bucket(Bucket="models")
    cmd = ["deploy", "pipeline", "--endpoint-name", "bulk", "--artifact", str(artifact),
           "--work-dir", str(tmp_path), "--upload", "s3://models/bulk/", "--mode", "async"]  # fmt: skip
    assert main(cmd) == 2
    assert "--mode async needs --s3-output-path" in capsys.readouterr().err
    bad = [*cmd[:-4], "--upload", "s3://models bucket/bulk/", "--s3-output-path", "s3://out/r/"]
    assert main(bad) != 0  # a bucket S3 would refuse: said before anything is packed or made
    assert "is not an S3 bucket name" in capsys.readouterr().err
    # An async setting SageMaker would take and fail on at each invocation: before step 1 too.
    topic = ["--sns-error-topic", "arn:aws:sns:us-east-1:123456789012"]
    assert main([*cmd, "--s3-output-path", "s3://out/r/", *topic]) == 2
    assert "is not an SNS topic ARN" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert main([*cmd, "--s3-output-path", "s3://out/r/"]) == 0
    out = capsys.readouterr().out
    assert "[1/6] build: using" in out and "[6/6] check: skipped: no --check-image" in out
    variant = _variants("bulk")[0]
    assert variant["InstanceType"] == "ml.m5.large"
    assert_clean("bulk", {variant["VariantName"]: (0, 2)})


def test_pipeline_async_check_goes_through_the_endpoint(
    aws: None,
    artifact: Path,
    sample: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The async pipeline's check uploads the photo, invokes the endpoint asynchronously and
    checks the answer it finds at the output location (SageMaker played by a real server)."""
    from stygig.deploy import sagemaker as sm_api
    from tests.integration.server_fixtures import running_server
    from tests.integration.test_sagemaker_async import FakeAsyncRuntime

    _c("s3").create_bucket(Bucket="models")
    _c("s3").create_bucket(Bucket="out")
    photo = next((sample[0] / "queries").glob("*.jpg"))
    with running_server(artifact, tmp_path / "server.log") as server:
        fake = FakeAsyncRuntime(server.url)
        real = sm_api.aws_client
        monkeypatch.setattr(
            sm_api,
            "aws_client",
            lambda service, region=None: (
                fake if service == "sagemaker-runtime" else real(service, region)
            ),
        )
        cmd = ["deploy", "pipeline", "--endpoint-name", "bulk", "--artifact", str(artifact),
               "--work-dir", str(tmp_path / "work"), "--upload", "s3://models/bulk/",
               "--mode", "async", "--s3-output-path", "s3://out/r", "--s3-failure-path", "s3://out/f",
               "--check-image", str(photo),
               "--check-timeout", "120"]  # fmt: skip
        try:
            assert main(cmd) == 0
        finally:
            fake.close()
    out = capsys.readouterr().out
    assert "[6/6] check: " in out and "ok (rgb triples" in out
    (call,) = fake.calls
    assert call["InputLocation"].startswith("s3://out/r/_pipeline-check/")
    assert call["ContentType"] == "image/jpeg"
