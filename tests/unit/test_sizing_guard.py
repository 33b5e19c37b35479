"""One source of sizing figures: `advise` and the CPU guard of `deploy sync` quote the same row
of the instance matrix for the same encoder (docs/deploy.md, "Sizing figures: one source")."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from stygig.cli import main
from stygig.deploy.advisor import describe_figures, figures_for, load_matrix
from stygig.deploy.check_command import cpu_guard
from stygig.errors import InvalidOptionsError


def _artifact(root: Path, name: str, quantization: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    encoder = {"name": name, "quantization": quantization}
    (root / "manifest.json").write_text(json.dumps({"format_version": 1, "encoder": encoder}))
    return root


def _guard_args(instance: str, **extra: object) -> argparse.Namespace:
    return argparse.Namespace(mode="sync", instance_type=instance, allow_cpu=False, **extra)


def _row(instance: str, model: str) -> str:
    figures = figures_for(load_matrix(), instance, model)
    assert figures is not None
    return describe_figures(figures, model)


def test_the_guard_quotes_the_artifacts_encoder(tmp_path: Path) -> None:
    art = _artifact(tmp_path / "effnet", "efficientnet-lite0", "int8")
    with pytest.raises(InvalidOptionsError) as e:
        cpu_guard(_guard_args("ml.m5.large", artifact=str(art)))
    assert e.value.code == "cpu_realtime" and "--allow-cpu" in e.value.message
    assert _row("ml.m5.large", "efficientnet-lite0-int8") in e.value.message
    assert "clip-vit-b-32" not in e.value.message.split("compare:")[0]
    assert "[the artifact's encoder]" in e.value.message
    # The caller that has the archive's manifest passes its encoder block.
    with pytest.raises(InvalidOptionsError) as e:
        cpu_guard(_guard_args("ml.m5.large"), encoder={"name": "efficientnet-lite0"})
    assert _row("ml.m5.large", "efficientnet-lite0") in e.value.message
    # A model key recorded elsewhere (e.g. with the uploaded archive) is taken as it is.
    with pytest.raises(InvalidOptionsError) as e:
        cpu_guard(_guard_args("ml.m5.large"), encoder="clip-vit-b-32-int8")
    assert _row("ml.m5.large", "clip-vit-b-32-int8") in e.value.message
    # --encoder names it when there is no artifact at hand; the artifact wins over it.
    with pytest.raises(InvalidOptionsError) as e:
        cpu_guard(_guard_args("ml.m5.large", encoder="clip-vit-b-32-int8"))
    assert _row("ml.m5.large", "clip-vit-b-32-int8") in e.value.message
    with pytest.raises(InvalidOptionsError) as e:
        cpu_guard(_guard_args("ml.m5.large", encoder="clip-vit-b-32", artifact=str(art)))
    assert _row("ml.m5.large", "efficientnet-lite0-int8") in e.value.message
    assert "not --encoder clip-vit-b-32" in e.value.message
    # Nothing at all: the default, what `stygig build` builds (review, s51: it was CLIP's
    # row, 5.6x off a default build's capacity), named as an assumption.
    with pytest.raises(InvalidOptionsError) as e:
        cpu_guard(_guard_args("ml.m5.large"))
    assert _row("ml.m5.large", "efficientnet-lite0") in e.value.message
    assert "the default: name another with --encoder or --artifact" in e.value.message
    # An encoder the matrix has no row for: said so, still refused without --allow-cpu.
    with pytest.raises(InvalidOptionsError, match="no figures in the instance matrix for tiny"):
        cpu_guard(_guard_args("ml.m5.large", encoder="tiny"))
    # GPU instances and async deployments pass untouched.
    cpu_guard(_guard_args("ml.g4dn.2xlarge"))
    cpu_guard(argparse.Namespace(mode="async", instance_type="ml.m5.large", allow_cpu=False))


def test_advise_and_the_guard_print_the_same_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The contradiction of issue 14: advise recommends a CPU instance for 10k requests/hour,
    # deploy sync refuses it. Now advise says what the guard needs, and both quote one row.
    art = _artifact(tmp_path / "effnet", "efficientnet-lite0")
    assert main(["advise", "--mode", "sync", "--requests-per-hour", "10000",
                 "--artifact", str(art)]) == 0  # fmt: skip
    advice = capsys.readouterr().out
    assert "model efficientnet-lite0: the encoder of effnet\n" in advice
    assert "recommended: 1 x ml.c5.large" in advice
    row = _row("ml.c5.large", "efficientnet-lite0")
    assert row in advice
    assert "needs --allow-cpu --instance-type ml.c5.large" in advice
    cpu_guard(
        argparse.Namespace(
            mode="sync", instance_type="ml.c5.large", allow_cpu=True, artifact=str(art)
        )
    )
    assert f"expected latency {row}" in capsys.readouterr().out
    # --encoder is the same flag as --model for advise.
    assert main(["advise", "--mode", "sync", "--requests-per-hour", "10000",
                 "--encoder", "clip-vit-b-32-int8"]) == 0  # fmt: skip
    assert _row("ml.c5.large", "clip-vit-b-32-int8") in capsys.readouterr().out
    # The artifact's encoder wins over another --encoder, and the note says so (review, s51:
    # the note was printed only when the two agreed).
    assert main(["advise", "--mode", "sync", "--requests-per-hour", "10000",
                 "--artifact", str(art), "--encoder", "clip-vit-b-32"]) == 0  # fmt: skip
    advice = capsys.readouterr().out
    assert "model efficientnet-lite0: the encoder of effnet, not --encoder clip-vit-b-32" in advice
    assert row in advice
    # Neither: what a default build makes.
    assert main(["advise", "--mode", "sync", "--requests-per-hour", "10000"]) == 0
    assert row in capsys.readouterr().out


def test_advise_names_break_even_points_and_the_guides_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["advise", "--mode", "sync", "--requests-per-hour", "1000000",
                 "--latency-target-ms", "50", "--encoder", "clip-vit-b-32"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "recommended: 3 x ml.g4dn.2xlarge" in out
    assert "break-even: the load (requests/hour) at which another type costs less than" in out
    assert "ml.g4dn.xlarge   cheaper up to 604,800/h" in out
    for name in ("ml.m5.2xlarge", "ml.g4dn.2xlarge", "ml.p3.2xlarge"):
        assert f"\n  {name}: estimate: " in out  # the row, and under the table how it was made


def test_advise_refuses_an_unreadable_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["advise", "--mode", "sync", "--requests-per-hour", "10",
                 "--artifact", str(tmp_path)])  # fmt: skip
    assert code == 4
    err = capsys.readouterr().err
    assert "not a StyGig artifact" in err and "Traceback" not in err
