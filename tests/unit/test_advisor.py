"""The advisor against examples worked by hand (figures from a small matrix written here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from stygig.deploy.advisor import (
    DEFAULT_MODEL,
    Figures,
    Instance,
    Matrix,
    advise,
    break_even,
    break_evens,
    cost_per_month,
    cost_per_request,
    format_advice,
    instances_needed,
    is_gpu_instance,
    load_matrix,
    model_for_artifact,
    model_key,
    requests_per_minute,
    resolve_model,
    with_prices,
)
from stygig.errors import ConfigError, InvalidOptionsError

CPU = Instance("ml.c5.large", 2, 4, None, 0.10, {"m": Figures(80.0, 150.0, 10.0, "measured")})
GPU = Instance("ml.g4dn.xlarge", 4, 16, "T4", 0.70, {"m": Figures(20.0, 40.0, 100.0, "estimate")})
MATRIX = Matrix((CPU, GPU), hours_per_month=730, region="us-east-1", date="2024")


def test_the_guides_throughput_recomputed() -> None:
    # 60 000 ms a minute / 570 ms a request = 105.26 requests a minute per worker, not 6.
    assert requests_per_minute(570) == pytest.approx(105.263, abs=1e-3)
    assert requests_per_minute(570, workers=4) == pytest.approx(421.05, abs=1e-2)


def test_instances_needed_by_hand() -> None:
    # 36 000 req/h = 10 req/s; one instance carries 10 x 0.7 = 7 req/s -> ceil(10 / 7) = 2.
    assert instances_needed(36_000, 10.0, 0.7, 1) == 2
    # 3 600 req/h = 1 req/s -> 1 instance; the floor of 2 wins.
    assert instances_needed(3_600, 10.0, 0.7, 2) == 2
    # Exactly at capacity: 25 200 req/h = 7 req/s = 10 x 0.7 -> 1.
    assert instances_needed(25_200, 10.0, 0.7, 1) == 1
    with pytest.raises(InvalidOptionsError):
        instances_needed(1, 0.0, 0.7, 1)


def test_costs_by_hand() -> None:
    # 2 x $0.10 x 730 h = $146.00; 10 000 req/h x 730 h = 7.3 M requests -> $0.00002 each.
    monthly = cost_per_month(0.10, 2, 730)
    assert monthly == pytest.approx(146.0)
    assert cost_per_request(monthly, 10_000, 730) == pytest.approx(146.0 / 7_300_000)
    # Busy 6 h a day: a quarter of the hours and of the requests; the per-request cost holds.
    assert cost_per_month(0.10, 2, 730, 6) == pytest.approx(36.5)
    assert cost_per_request(36.5, 10_000, 730, 6) == pytest.approx(146.0 / 7_300_000)


def test_cheapest_that_meets_the_target() -> None:
    # 10 000 req/h = 2.78 req/s: 1 CPU instance (7 req/s at 70%) for $73.00, or 1 GPU for $511.
    advice = advise(MATRIX, mode="sync", requests_per_hour=10_000, model="m")
    assert advice.choice is not None
    assert (advice.choice.instance.name, advice.choice.count) == ("ml.c5.large", 1)
    assert advice.choice.monthly == pytest.approx(73.0)
    assert advice.choice.per_request == pytest.approx(73.0 / 7_300_000)
    # A p99 target of 100 ms rules the CPU out (150 ms): the GPU at 0.70 x 730 = $511.
    strict = advise(MATRIX, mode="sync", requests_per_hour=10_000, latency_target_ms=100, model="m")
    assert strict.choice is not None and strict.choice.instance.name == "ml.g4dn.xlarge"
    assert strict.choice.monthly == pytest.approx(511.0)
    # 100 000 req/h = 27.8 req/s: ceil(27.8 / 7) = 4 CPU ($292) beats 1 GPU ($511).
    busy = advise(MATRIX, mode="sync", requests_per_hour=100_000, model="m")
    assert busy.choice is not None and busy.choice.count == 4
    assert busy.choice.monthly == pytest.approx(292.0)
    nothing = advise(MATRIX, mode="sync", requests_per_hour=10, latency_target_ms=10, model="m")
    assert nothing.choice is None


def test_async_hours_and_autoscaling_target() -> None:
    advice = advise(
        MATRIX, mode="async", requests_per_hour=10_000, active_hours_per_day=12, model="m"
    )
    assert advice.choice is not None
    assert advice.choice.monthly == pytest.approx(36.5)
    # 10 req/s x 60 s x 0.7 = 420 invocations per instance per minute.
    assert advice.choice.invocations_per_minute_target == 420
    text = format_advice(advice)
    assert "1 x ml.c5.large" in text and "$36.50/month" in text


def test_bad_inputs() -> None:
    with pytest.raises(InvalidOptionsError):
        advise(MATRIX, mode="batch", requests_per_hour=1)
    with pytest.raises(InvalidOptionsError):
        advise(MATRIX, mode="sync", requests_per_hour=0)
    with pytest.raises(InvalidOptionsError):
        advise(MATRIX, mode="sync", requests_per_hour=1, model="nope")


def test_packaged_matrix_and_its_sources() -> None:
    matrix = load_matrix()
    names = {i.name for i in matrix.instances}
    assert {"ml.g4dn.xlarge", "ml.m5.large"} <= names
    m5 = matrix.instance("ml.m5.large")
    assert m5.models["clip-vit-b-32"].source == "measured"
    assert all(
        f.kind in ("measured", "scaled", "estimate")
        for i in matrix.instances
        for f in i.models.values()
    )
    # The guide's rows are there, each figure an estimate that says how it was made.
    for name in ("ml.m5.2xlarge", "ml.g4dn.2xlarge", "ml.p3.2xlarge"):
        for f in matrix.instance(name).models.values():
            assert f.kind == "estimate" and len(f.source.partition(":")[2].strip()) > 20
    # Every instance has figures for every declared model (the guard needs the artifact's).
    models = set(matrix.instance("ml.c5.large").models)
    assert {"efficientnet-lite0", "efficientnet-lite0-int8", "clip-vit-b-32-int8"} <= models
    assert all(set(i.models) == models for i in matrix.instances)
    assert matrix.guide_latency_ms == 570
    advice = advise(matrix, mode="sync", requests_per_hour=10_000)
    assert advice.choice is not None and not math.isnan(advice.choice.monthly)
    assert "105.3 requests/minute per worker" in format_advice(advice)
    assert is_gpu_instance("ml.g4dn.xlarge") and is_gpu_instance("ml.p3.2xlarge")
    assert not is_gpu_instance("ml.m5.large") and not is_gpu_instance("ml.c5.xlarge")


_GOOD = """
models: {m: "a model"}
instances:
  ml.c5.large:
    vcpu: 2
    memory_gib: 4
    gpu: null
    price_per_hour: 0.1
    models:
      m: {p50_ms: 80, p99_ms: 150, rps: 10, source: measured}
"""


def test_a_minimal_matrix_file(tmp_path: Path) -> None:
    path = tmp_path / "instances.yaml"
    path.write_text(_GOOD)
    matrix = load_matrix(path)
    assert matrix.instances == (
        Instance("ml.c5.large", 2, 4.0, None, 0.1, {"m": Figures(80.0, 150.0, 10.0, "measured")}),
    )
    assert (matrix.hours_per_month, matrix.guide_latency_ms) == (730.0, None)


@pytest.mark.parametrize(
    ("old", "new", "field", "problem"),
    [
        ("price_per_hour: 0.1", "price_per_hour: '0.1'", "price_per_hour", "valid number"),
        ("price_per_hour: 0.1", "price_per_hour: -0.1", "price_per_hour", "greater than 0"),
        ("vcpu: 2", "vcpu: 2.5", "vcpu", "valid integer"),
        ("vcpu: 2", "vcpus: 2", "vcpus", "unknown key"),
        ("gpu: null", "gpu: 1", "gpu", "valid string"),
        ("rps: 10", "rps: 0", "models.m.rps", "greater than 0"),
        ("source: measured", "source: guessed", "models.m.source", "'measured', 'scaled'"),
        ("source: measured", "source: 'estimate:'", "models.m.source", "estimate: <how>"),
        ("p50_ms: 80", "p50_ms: 80, p90_ms: 90", "models.m.p90_ms", "unknown key"),
        ("p99_ms: 150", "p99_ms: 50", "the document", "p99_ms 50 is below p50_ms 80"),
        ("models: {m:", "models: {n:", "the document", "not declared under `models`"),
        ("models: {m:", "pricing: {hours_per_month: '730'}\nmodels: {m:", "pricing", "number"),
        ("instances:", "instance:", "instance", "unknown key"),
        # A key given twice was "the last one wins" (a price of 9.99: review, session 42).
        (
            "price_per_hour: 0.1",
            "price_per_hour: 0.1\n    price_per_hour: 9.99",
            "found the key 'price_per_hour' twice",
            "at line",
        ),
        (
            "  ml.c5.large:",
            "  ml.c5.large: {vcpu: 64}\n  ml.c5.large:",
            "'ml.c5.large' twice",
            "line",
        ),
    ],
)
def test_bad_matrix_files_name_the_field_and_file(
    tmp_path: Path, old: str, new: str, field: str, problem: str
) -> None:
    assert old in _GOOD
    path = tmp_path / "instances.yaml"
    path.write_text(_GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_matrix(path)
    # (a file YAML cannot read at all, as one with a key twice: "cannot read ...")
    assert e.value.message.removeprefix("cannot read ").startswith(f"instance matrix {path}: ")
    assert f"{field}" in e.value.message and problem in e.value.message


@pytest.mark.parametrize("text", ["[1, 2]\n", "", "instances: {a: [\n"])
def test_unreadable_matrix_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "instances.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        load_matrix(path)


def test_break_even_worked_by_hand() -> None:
    # CPU: $0.10/h carrying 10 x 0.7 x 3600 = 25 200 req/h; GPU: $0.70/h carrying 252 000.
    # The GPU costs less when 8+ CPUs ($0.80) face 1 GPU: above 7 x 25 200 = 176 400 req/h, up
    # to its own capacity 252 000; again above 14 x 25 200 = 352 800 (15 CPUs, $1.50, vs 2 GPUs,
    # $1.40) up to 504 000; at 504 000-529 200 both cost $2.10 (a tie is not cheaper), and per
    # request of capacity the GPU is cheaper ($2.78e-6 vs $3.97e-6), so from 529 200 on it wins
    # at every load (beyond 0.70 / (3.97e-6 - 2.78e-6) = 588 000 it must).
    cpu, gpu = (0.10, 25_200.0), (0.70, 252_000.0)
    low = break_even(cpu, gpu, at=10_000)
    assert (low.below, low.above, low.stays) == (None, 176_400, 529_200)
    mid = break_even(cpu, gpu, at=300_000)
    assert (mid.below, mid.above, mid.stays) == (252_000, 352_800, 529_200)
    # The other way round: 6 CPUs ($0.60) beat 1 GPU up to 6 x 25 200 = 151 200 (7 CPUs tie),
    # and again above 252 000 (2 GPUs, $1.40, vs 11 CPUs); never at every load.
    back = break_even(gpu, cpu, at=200_000)
    assert (back.below, back.above, back.stays) == (151_200, 252_000, None)
    # Same price per request of capacity (2 x the price for 2 x the throughput): never cheaper.
    same = break_even(cpu, (0.20, 50_400.0), at=10_000)
    assert (same.below, same.above, same.stays) == (None, None, None)


def test_advise_prints_break_even_points() -> None:
    # 200 000 req/h: 8 CPUs ($0.80/h, $584) or 1 GPU ($0.70/h, $511): the GPU.
    advice = advise(MATRIX, mode="sync", requests_per_hour=200_000, model="m")
    assert advice.choice is not None and advice.choice.instance.name == "ml.g4dn.xlarge"
    (b,) = break_evens(advice)
    assert (b.other, b.below, b.above) == ("ml.c5.large", 151_200, 252_000)
    text = format_advice(advice)
    assert "cheaper up to 151,200/h (42.0/s); cheaper from 252,000/h (70.0/s)" in text


def test_model_keys_and_the_artifacts_encoder(tmp_path: Path) -> None:
    assert model_key({"name": "clip-vit-b-32", "quantization": None}) == "clip-vit-b-32"
    assert model_key({"name": "efficientnet-lite0", "quantization": "int8"}) == (
        "efficientnet-lite0-int8"
    )
    with pytest.raises(InvalidOptionsError):
        model_key({})
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format_version": 1, "encoder": {"name": "efficientnet-lite0"}})
    )
    assert model_for_artifact(tmp_path) == "efficientnet-lite0"
    # The artifact says what is deployed; --encoder is for when there is none at hand.
    assert resolve_model(None, tmp_path) == ("efficientnet-lite0", "the artifact's encoder")
    assert resolve_model("clip-vit-b-32", tmp_path) == (
        "efficientnet-lite0",
        "the artifact's encoder, not --encoder clip-vit-b-32",
    )
    assert resolve_model("clip-vit-b-32-int8", None) == ("clip-vit-b-32-int8", "from --encoder")
    assert resolve_model(None, None)[0] == DEFAULT_MODEL


def test_live_prices_replace_the_typed_in_ones() -> None:
    priced = with_prices(MATRIX, {"ml.g4dn.xlarge": 0.5}, "AWS Price List API")
    assert priced.instance("ml.g4dn.xlarge").price_per_hour == 0.5
    assert priced.instance("ml.c5.large").price_per_hour == 0.10
    text = format_advice(advise(priced, mode="sync", requests_per_hour=10_000, model="m"))
    assert "prices: AWS Price List API;" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["advise", "--mode", "sync", "--requests-per-hour", "nan"],
        ["advise", "--mode", "sync", "--requests-per-hour", "inf"],
        ["advise", "--mode", "sync", "--requests-per-hour", "100", "--latency-target-ms", "-5"],
        ["advise", "--mode", "async", "--requests-per-hour", "100", "--min-instances", "-3"],
        [
            "deploy",
            "sync",
            "--model-uri",
            "s3://b/m.tar.gz",
            "--endpoint-name",
            "e",
            "--verify-max-mb",
            "nan",
        ],
    ],
)
def test_numbers_out_of_range_are_refused_as_they_are_read(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Review, session 53: NaN and infinities were tracebacks (after nothing was made, but a
    traceback), a negative latency target or instance count was taken."""
    from stygig.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --" in err and "Traceback" not in err
