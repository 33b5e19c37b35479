"""The deploy commands against moto's in-process AWS (SageMaker, S3, CloudWatch, autoscaling).

moto has no ``UpdateEndpoint``: :class:`_WithUpdate` applies it to moto's backend so that
blue/green, promote and rollback run through the same code as against AWS. The preflight
needs the model archive in S3: :func:`put_model` uploads the sample artifact's real archive
(packed once per module by the ``archive`` fixture) as ``stygig package --upload`` does.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stygig.cli import main
from stygig.deploy import sagemaker as sm_api
from tests.integration.server_fixtures import running_server

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:botocore.*")

ROLE = "arn:aws:iam::123456789012:role/stygig"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/stygig:cpu"
REGION = "us-east-1"


class _WithUpdate:
    """A SageMaker client plus ``update_endpoint`` applied to moto's backend."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_endpoint(self, EndpointName: str, EndpointConfigName: str) -> dict[str, Any]:
        from moto.sagemaker.models import sagemaker_backends

        backend = sagemaker_backends["123456789012"][REGION]
        endpoint = backend.endpoints[EndpointName]
        config = backend.describe_endpoint_config(EndpointConfigName)
        endpoint.endpoint_config_name = EndpointConfigName
        endpoint.production_variants = endpoint._process_production_variants(
            config["ProductionVariants"]
        )
        return {"EndpointArn": endpoint.arn}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("STYGIG_SAGEMAKER_ROLE", ROLE)
    monkeypatch.setenv("STYGIG_IMAGE_URI", IMAGE)
    counter = itertools.count(1)
    monkeypatch.setattr(sm_api, "stamp", lambda: f"t{next(counter)}")
    real = sm_api.aws_client
    monkeypatch.setattr(
        sm_api,
        "aws_client",
        lambda service, region=None: (
            _WithUpdate(real(service, region)) if service == "sagemaker" else real(service, region)
        ),
    )
    with moto.mock_aws():
        yield


@pytest.fixture(scope="module")
def artifact(sample: tuple[Path, Path]) -> Path:
    return sample[1]


@pytest.fixture(scope="module")
def archive(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The sample artifact packed as model.tar.gz, once per module."""
    from stygig.deploy.package import package_artifact

    return package_artifact(artifact, tmp_path_factory.mktemp("archive") / "model.tar.gz")


def put_model(archive: Any, key: str, bucket: str = "models") -> str:
    """Upload the packed archive to ``s3://bucket/key`` with its upload record; the URI."""
    from stygig.deploy.package import upload

    s3 = boto3.client("s3", region_name=REGION)
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    return upload(
        archive.path,
        f"s3://{bucket}/{key}",
        sha256=archive.sha256,
        manifest_sha256=archive.manifest_sha256,
    )


def _sm() -> Any:
    return boto3.client("sagemaker", region_name=REGION)


def test_package_checks_uploads_and_refuses(
    aws: None, artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="models")
    out = tmp_path / "model.tar.gz"
    assert main(["package", "--artifact", str(artifact), "--out", str(out),
                 "--upload", "s3://models/stygig/"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "sha256: " in text and "uploaded: s3://models/stygig/model.tar.gz" in text
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "manifest.json" in names and all("/" not in n for n in names)
    head = boto3.client("s3", region_name=REGION).head_object(
        Bucket="models", Key="stygig/model.tar.gz"
    )
    assert head["ContentLength"] == out.stat().st_size
    # A missing bucket: a storage error that names it.
    assert main(["package", "--artifact", str(artifact), "--out", str(out),
                 "--upload", "s3://nope/model.tar.gz"]) == 6  # fmt: skip
    assert "bucket 'nope' does not exist" in capsys.readouterr().err
    # A tampered artifact is refused before anything is written.
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in artifact.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "items.jsonl").write_text("{}\n")
    assert main(["package", "--artifact", str(broken), "--out", str(tmp_path / "b.tgz")]) == 4
    assert "does not match its checksum" in capsys.readouterr().err
    # Review (s37): files cut and their checksums re-recorded matched the manifest, so the
    # archive was packed and an endpoint created that could never load it. Loaded first now.
    from stygig.artifact import file_sha256

    manifest = json.loads((broken / "manifest.json").read_text())
    lines = (artifact / "items.jsonl").read_bytes().splitlines(keepends=True)
    (broken / "items.jsonl").write_bytes(b"".join(lines[:60]))
    entry = manifest["files"]["items.jsonl"]
    entry["bytes"], entry["sha256"] = (
        (broken / "items.jsonl").stat().st_size,
        file_sha256(broken / "items.jsonl"),
    )
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert main(["package", "--artifact", str(broken), "--out", str(tmp_path / "c.tgz")]) == 4
    assert "items" in capsys.readouterr().err
    assert not (tmp_path / "c.tgz").exists()
    # Review, session 49: an --out naming no file was a ValueError traceback, after the whole
    # artifact was verified and loaded.
    for named in ("", ".", "/", str(tmp_path)):
        assert main(["package", "--artifact", str(artifact), "--out", named]) == 2, named
        err = capsys.readouterr().err
        assert "name the archive file to write" in err and "Traceback" not in err
    # ... and deploy's waits are finite numbers (--poll nan ended in a traceback after the
    # endpoint was created, --timeout nan waited for ever, --poll 0 asked AWS in a loop).
    for flag, value in (
        ("--poll", "nan"),
        ("--poll", "0"),
        ("--timeout", "nan"),
        ("--endpoint-name", "bad_name!"),  # SageMaker's rule, before any work
        ("--endpoint-name", "x" * 64),
    ):
        with pytest.raises(SystemExit) as e:
            main(["deploy", "sync", "--model-uri", "s3://m/x.tar.gz", "--endpoint-name", "e",
                  flag, value])  # fmt: skip
        assert e.value.code == 2 and f"argument {flag}: expected " in capsys.readouterr().err


def test_package_packs_what_it_checked(
    artifact: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Review (session 35): ``--out`` inside the artifact overwrote one of its files (exit 0,
    then a broken artifact), an ``--upload`` that is not s3:// was refused only after packing, and a file
    swapped between the check and the packing (a symbolic link to /etc/passwd, an edit) went
    into the archive."""
    from stygig.deploy import package

    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    for out in (art / "embeddings.npy", art / "model.tar.gz", art / "sub" / "model.tar.gz"):
        assert main(["package", "--artifact", str(art), "--out", str(out)]) == 2
        assert "inside the artifact folder" in capsys.readouterr().err
    assert main(["inspect", str(art)]) == 0  # untouched
    capsys.readouterr()
    # A folder that is not an artifact, and a manifest that is a link (to a device that never
    # ends): said from the manifest check, as before (the first version hashed it first).
    (tmp_path / "empty").mkdir()
    assert (
        main(["package", "--artifact", str(tmp_path / "empty"), "--out", str(tmp_path / "e.tgz")])
        == 4
    )
    assert "manifest.json not found" in capsys.readouterr().err
    linked = tmp_path / "linked"
    shutil.copytree(artifact, linked)
    (linked / "manifest.json").unlink()
    (linked / "manifest.json").symlink_to("/dev/zero")
    assert main(["package", "--artifact", str(linked), "--out", str(tmp_path / "l.tgz")]) == 4
    assert "symbolic link" in capsys.readouterr().err
    out = tmp_path / "m.tar.gz"
    assert main(["package", "--artifact", str(art), "--out", str(out),
                 "--upload", str(tmp_path / "bucket")]) == 6  # fmt: skip
    assert "--upload must be an s3:// URI" in capsys.readouterr().err and not out.exists()
    # A bucket name or key S3 would refuse: said before packing, not after (review, session 49).
    for upload, said in (("s3://My Bucket/", "is not an S3 bucket name"),
                         ("s3://bucket/" + "p/" * 510, "at most 1024 bytes")):  # fmt: skip
        assert main(["package", "--artifact", str(art), "--out", str(out),
                     "--upload", upload]) == 6  # fmt: skip
        assert said in capsys.readouterr().err and not out.exists()

    real = package.verify_files
    for swap in ("link", "edit"):
        work = tmp_path / swap
        shutil.copytree(artifact, work)

        def verified_then_swapped(root: Any, manifest: Any, swap: str = swap) -> None:
            real(root, manifest)  # checked; then someone changes a file before it is packed
            target = Path(root) / "rejects.csv"
            target.unlink()
            if swap == "link":
                target.symlink_to("/etc/passwd")
            else:
                target.write_text("id,reason\nedited,after the check\n")

        monkeypatch.setattr(package, "verify_files", verified_then_swapped)
        assert (
            main(["package", "--artifact", str(work), "--out", str(tmp_path / f"{swap}.tgz")]) == 4
        )
        err = capsys.readouterr().err
        assert ("symbolic link" if swap == "link" else "changed while it was packed") in err, err
        assert not (tmp_path / f"{swap}.tgz").exists()
        assert not list(tmp_path.glob(f".{swap}.tgz.*partial"))  # no temporary file left


def test_sync_defaults_cpu_guard_and_autoscaling(
    aws: None, archive: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = put_model(archive, "model.tar.gz")
    assert main(["deploy", "sync", "--model-uri", uri, "--endpoint-name", "shop"]) == 0
    out = capsys.readouterr().out
    assert "InService" in out and "stygig invoke --endpoint-name shop" in out
    sm = _sm()
    endpoint = sm.describe_endpoint(EndpointName="shop")
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.g4dn.xlarge", 1)
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == uri
    assert model["PrimaryContainer"]["Image"] == IMAGE and model["ExecutionRoleArn"] == ROLE
    # Real-time on a CPU instance: refused, with the expected latency, unless --allow-cpu.
    args = ["deploy", "sync", "--model-uri", uri, "--endpoint-name", "cpu",
            "--instance-type", "ml.m5.large"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--allow-cpu" in err and "p99" in err and "ms" in err
    assert main([*args, "--allow-cpu", "--max-instances", "3"]) == 0
    out = capsys.readouterr().out
    assert "expected latency p50" in out
    # The target is what `stygig advise` prints for the instance, not the guide's 70 a minute
    # (1-2 % of what it serves: review, session 53); the encoder unknown, the slowest listed.
    assert "target 840 invocations per instance per minute (70% of the 20 requests/s" in out
    assert "the encoder unknown" in out
    aas = boto3.client("application-autoscaling", region_name=REGION)
    target = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 3)
    assert target["ResourceId"].startswith("endpoint/cpu/variant/")
    policy = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 840.0
    assert (
        tracking["PredefinedMetricSpecification"]["PredefinedMetricType"]
        == "SageMakerVariantInvocationsPerInstance"
    )
    # The encoder named: its figures; a target given: that one; no figures: refused first.
    for name, extra, target in (
        ("cpu2", ["--encoder", "efficientnet-lite0-int8"], 6745.0),
        ("cpu3", ["--encoder", "clip-vit-b-32", "--target-invocations", "70"], 70.0),
    ):
        assert main(["deploy", "sync", "--model-uri", uri, "--endpoint-name", name,
                     "--instance-type", "ml.m5.large", "--allow-cpu", "--max-instances", "2",
                     *extra]) == 0  # fmt: skip
        policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
        mine = [p for p in policies if p["ResourceId"].startswith(f"endpoint/{name}/")]
        assert mine[0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == target
    unknown = ["deploy", "sync", "--model-uri", uri, "--endpoint-name", "cpu4",
               "--instance-type", "ml.c6i.large", "--allow-cpu", "--max-instances", "2"]  # fmt: skip
    assert main(unknown) == 2
    assert "pass --target-invocations N" in capsys.readouterr().err
    assert "cpu4" not in str(_sm().list_endpoints()["Endpoints"])


def test_async_config_and_scale_to_zero(
    aws: None, archive: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sns = boto3.client("sns", region_name=REGION)
    ok = sns.create_topic(Name="ok")["TopicArn"]
    bad = sns.create_topic(Name="bad")["TopicArn"]
    uri = put_model(archive, "model.tar.gz")
    assert main(["deploy", "async", "--model-uri", uri, "--endpoint-name",
                 "batch", "--s3-output-path", "s3://out/results/", "--sns-success-topic", ok,
                 "--sns-error-topic", bad]) == 0  # fmt: skip
    sm = _sm()
    name = sm.describe_endpoint(EndpointName="batch")["EndpointConfigName"]
    config = sm.describe_endpoint_config(EndpointConfigName=name)
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"
    asynchronous = config["AsyncInferenceConfig"]
    assert asynchronous["ClientConfig"]["MaxConcurrentInvocationsPerInstance"] == 4
    assert asynchronous["OutputConfig"]["S3OutputPath"] == "s3://out/results/"
    assert asynchronous["OutputConfig"]["NotificationConfig"] == {
        "SuccessTopic": ok,
        "ErrorTopic": bad,
    }
    aas = boto3.client("application-autoscaling", region_name=REGION)
    target = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
    assert target["MinCapacity"] == 0
    kinds = {
        p["PolicyType"]
        for p in aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    }
    assert kinds == {"TargetTrackingScaling", "StepScaling"}
    alarms = boto3.client("cloudwatch", region_name=REGION).describe_alarms()["MetricAlarms"]
    assert [a["MetricName"] for a in alarms] == ["HasBacklogWithoutCapacity"]
    assert "wakes from zero" in capsys.readouterr().out


def test_async_settings_sagemaker_takes_are_taken() -> None:
    """Every partition's topics and FIFO topics (SageMaker's own pattern: review of session 54's
    first check, which refused them)."""
    from stygig.deploy.preflight import check_async_settings

    for topic in (
        "arn:aws:sns:us-east-1:123456789012:results.fifo",
        "arn:aws-iso:sns:us-iso-east-1:123456789012:t",
        "arn:aws-cn:sns:cn-north-1:123456789012:t",
    ):
        region = topic.split(":")[3]
        settings = sm_api.AsyncSettings("s3://out/r/", "s3://out/f/", topic, topic, 1000)
        check_async_settings(settings, region)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--s3-output-path", "out/results/"], "is not an S3 prefix"),
        (["--s3-output-path", "s3://"], "names no bucket"),
        (["--s3-output-path", "s3://out/", "--s3-failure-path", "https://x/"], "S3 prefix"),
        (["--s3-output-path", "s3://o:1/"], "not an S3 bucket name"),
        (["--s3-output-path", "s3://out/", "--sns-success-topic", "ok"], "not an SNS topic ARN"),
        (
            ["--s3-output-path", "s3://out/", "--sns-error-topic",
             "arn:aws:sqs:us-east-1:123456789012:q"],
            "not an SNS topic ARN",
        ),
        (
            ["--s3-output-path", "s3://out/", "--region", REGION, "--sns-error-topic",
             "arn:aws:sns:eu-west-1:123456789012:bad"],
            "the endpoint in us-east-1",
        ),
        (["--s3-output-path", "s3://out/", "--max-concurrent", "0"], "1..1,000"),
        (["--s3-output-path", "s3://out/", "--max-concurrent", "1001"], "1..1,000"),
    ],
)  # fmt: skip
def test_async_settings_are_checked_before_anything_is_made(
    aws: None, archive: Any, capsys: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    # SageMaker takes a config with a bad result prefix or topic and fails every invocation
    # later (review, session 53): refused first, and nothing is left behind.
    uri = put_model(archive, "model.tar.gz")
    assert main(["deploy", "async", "--model-uri", uri, "--endpoint-name", "a", *flags]) == 2
    assert says in capsys.readouterr().err
    sm = _sm()
    assert sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []


def test_blue_green_promote_rollback_delete(
    aws: None, archive: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2, v3, v4 = (put_model(archive, f"v{n}/model.tar.gz") for n in range(1, 5))
    assert main(["deploy", "sync", "--model-uri", v1, "--endpoint-name", "e"]) == 0
    assert main(["deploy", "update", "--endpoint-name", "e", "--model-uri", v2,
                 "--traffic", "10"]) == 0  # fmt: skip
    sm = _sm()

    def variants() -> list[dict[str, Any]]:
        name = sm.describe_endpoint(EndpointName="e")["EndpointConfigName"]
        return list(sm.describe_endpoint_config(EndpointConfigName=name)["ProductionVariants"])

    blue, green = variants()
    assert (blue["InitialVariantWeight"], green["InitialVariantWeight"]) == (90.0, 10.0)
    assert sm.describe_model(ModelName=green["ModelName"])["PrimaryContainer"]["ModelDataUrl"] == v2
    # A second candidate while one is live: refused.
    assert main(["deploy", "update", "--endpoint-name", "e", "--model-uri", v3,
                 "--traffic", "10"]) == 2  # fmt: skip
    assert "promote or roll back first" in capsys.readouterr().err
    assert main(["deploy", "update", "--endpoint-name", "e", "--traffic", "50", "--no-wait"]) == 0
    assert main(["deploy", "rollback", "--endpoint-name", "e", "--no-wait"]) == 0
    assert [v["VariantName"] for v in variants()] == [blue["VariantName"]]
    assert main(["deploy", "update", "--endpoint-name", "e", "--model-uri", v4,
                 "--traffic", "20", "--no-wait"]) == 0  # fmt: skip
    candidate = variants()[1]["VariantName"]
    assert main(["deploy", "promote", "--endpoint-name", "e", "--no-wait"]) == 0
    assert [v["VariantName"] for v in variants()] == [candidate]
    # Alarms on the live variant, then delete everything.
    assert main(["alarms", "create", "--endpoint-name", "e", "--latency-ms", "500"]) == 0
    alarms = boto3.client("cloudwatch", region_name=REGION).describe_alarms()["MetricAlarms"]
    by_metric = {a["MetricName"]: a for a in alarms}
    assert set(by_metric) == {"ModelLatency", "Invocation4XXErrors", "Invocation5XXErrors"}
    assert by_metric["ModelLatency"]["Threshold"] == 500_000.0
    assert by_metric["ModelLatency"]["ExtendedStatistic"] == "p99"
    assert by_metric["Invocation5XXErrors"]["Statistic"] == "Average"
    assert main(["deploy", "delete", "--endpoint-name", "e"]) == 0
    assert sm.list_endpoints()["Endpoints"] == []
    assert main(["deploy", "delete", "--endpoint-name", "e"]) == 2
    assert "Could not find" in capsys.readouterr().err


def test_missing_credentials_role_and_region(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STYGIG_SAGEMAKER_ROLE")
    assert main(["deploy", "sync", "--model-uri", "s3://m/a.tar.gz", "--endpoint-name", "x"]) == 3
    assert "no execution role: pass --role or set STYGIG_SAGEMAKER_ROLE" in capsys.readouterr().err
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["deploy", "delete", "--endpoint-name", "x"]) == 3
    assert "no AWS credentials found" in capsys.readouterr().err
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    assert main(["deploy", "delete", "--endpoint-name", "x"]) == 3
    assert "pass --region or set AWS_DEFAULT_REGION" in capsys.readouterr().err


def test_invoke_url_against_a_real_server(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = next((artifact.parent / "catalog").rglob("*.jpg"))
    with running_server(artifact, tmp_path / "server.log") as server:
        code = main(["invoke", "--url", server.url, "--image", str(photo),
                     "--concurrency", "4", "--requests", "8"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "checks: rgb triples, top-5 votes, compatibility boost: ok" in out
    assert "latency:" in out and "requests      8 at concurrency 4" in out


def test_invoke_endpoint_checks_the_response(
    aws: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    body = {
        "mode": "outfit",
        "query": [{"category": "shirt", "category_source": "vote", "votes": {"shirt": 4},
                   "rgb": [10, 20, 30]}],
        "items": [{"id": "a", "rgb": [1, 2, 3], "boost": 1.0}],
    }  # fmt: skip
    backend = sagemakerruntime_backends["123456789012"][REGION]
    backend.results_queue.append((json.dumps(body), "application/json", "", ""))
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"not a jpeg: moto decodes bodies as UTF-8")
    assert main(["invoke", "--endpoint-name", "shop", "--image", str(photo)]) == 1
    captured = capsys.readouterr()
    assert "query: shirt (votes: shirt 4)" in captured.out
    assert "no item carries the compatibility boost" in captured.err


def test_endpoints_stygig_did_not_make_are_handled_with_care(
    aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review (session 35): ``deploy delete`` of one endpoint deleted an untagged model
    another endpoint still ran on, and a serverless variant (no InstanceType) was a KeyError
    traceback for ``alarms create`` and ``deploy delete``."""
    sm = boto3.client("sagemaker", region_name=REGION)
    container = {"Image": IMAGE, "ModelDataUrl": "s3://x/m.tar.gz"}
    sm.create_model(ModelName="shared-model", ExecutionRoleArn=ROLE, PrimaryContainer=container)
    for name in ("team-a", "team-b"):
        variant = {"VariantName": "v", "ModelName": "shared-model", "InstanceType": "ml.m5.large",
                   "InitialInstanceCount": 1}  # fmt: skip
        sm.create_endpoint_config(EndpointConfigName=f"{name}-cfg", ProductionVariants=[variant])
        sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-cfg")
    assert main(["deploy", "delete", "--endpoint-name", "team-a"]) == 0
    out = capsys.readouterr().out
    assert "deleted endpoint team-a" in out and "kept model shared-model: not tagged" in out
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["shared-model"]
    assert sm.describe_endpoint(EndpointName="team-b")["EndpointStatus"] == "InService"

    sm.create_model(ModelName="sl-model", ExecutionRoleArn=ROLE, PrimaryContainer=container)
    serverless = {"VariantName": "v", "ModelName": "sl-model",
                  "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}  # fmt: skip
    sm.create_endpoint_config(EndpointConfigName="sl-cfg", ProductionVariants=[serverless])
    sm.create_endpoint(EndpointName="sl", EndpointConfigName="sl-cfg")
    assert main(["alarms", "create", "--endpoint-name", "sl"]) == 0
    assert main(["deploy", "delete", "--endpoint-name", "sl"]) == 0
    out = capsys.readouterr().out
    assert "deleted endpoint sl" in out and "deleted alarm sl-v-5xx-rate" in out
    # A region name that is not one: a clear error, not botocore's traceback.
    assert main(["deploy", "delete", "--endpoint-name", "sl", "--region", "bad region"]) == 3
    assert "'bad region' is not an AWS region name" in capsys.readouterr().err


def test_delete_finds_what_it_made_for_a_long_endpoint_name(
    aws: None, archive: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Code review (session 35): names are the endpoint's cut to leave room for a suffix, so
    for a 63-character endpoint the listing by its whole name found none of them, and delete
    (keeping only what it found tagged) left its own config and model behind."""
    uri = put_model(archive, "v1/model.tar.gz")
    name = "shop-" + "x" * 58  # SageMaker's longest
    assert main(["deploy", "sync", "--model-uri", uri, "--endpoint-name", name]) == 0
    assert main(["deploy", "delete", "--endpoint-name", name]) == 0
    assert "kept" not in capsys.readouterr().out
    sm = _sm()
    assert sm.list_models()["Models"] == [] and sm.list_endpoint_configs()["EndpointConfigs"] == []
