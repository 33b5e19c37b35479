"""A build records which colour step measured its catalogue; an engine with another one says so
(harmony compares query colours with catalogue colours, so both must be measured alike)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from stygig.artifact import Artifact
from stygig.engine import Recommender
from stygig.features import COLOR_SIDE, color_method


def test_the_build_records_the_colour_step_and_a_match_is_quiet(
    sample: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    art = Artifact.load(sample[1])
    assert art.manifest["build"]["color_method"] == color_method()
    assert color_method().endswith(f"@{COLOR_SIDE}px")
    with caplog.at_level(logging.WARNING, logger="stygig.engine"):
        Recommender(art)
    assert not [r for r in caplog.records if "colour step" in r.getMessage()]


@pytest.mark.parametrize("recorded", [None, "0123456789ab@128px"])
def test_another_colour_step_is_named_at_load(
    sample: tuple[Path, Path], caplog: pytest.LogCaptureFixture, recorded: str | None
) -> None:
    art = Artifact.load(sample[1])
    build = {k: v for k, v in art.manifest["build"].items() if k != "color_method"}
    if recorded is not None:
        build["color_method"] = recorded
    older = replace(art, manifest={**art.manifest, "build": build})
    with caplog.at_level(logging.WARNING, logger="stygig.engine"):
        Recommender(older)
    [record] = [r for r in caplog.records if "colour step" in r.getMessage()]
    assert (recorded or "not recorded") in record.getMessage()
    assert color_method() in record.getMessage()
