"""The images install exact versions: every pip install in the Dockerfiles is constrained by
``requirements/lock.txt``, every line of which pins one package with ``==``; and the GPU
image's onnxruntime-gpu is a build for the CUDA major version of its base image."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "lock.txt"
DOCKERFILES = (REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.gpu")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")

#: onnxruntime-gpu releases on PyPI by the CUDA major version they are built for, read from
#: each wheel's [cuda] extra (nvidia-cuda-runtime-cu12~=12.0 up to 1.26.0; ~=13.0 from 1.27.0).
#: ONNX Runtime: "built with CUDA 12.x are compatible with any CUDA 12.x version".
ORT_GPU_FOR_CUDA = {12: (Version("1.19.0"), Version("1.26.0")), 13: (Version("1.27.0"), None)}


def lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in LOCK.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{name} pinned twice"
        pins[name] = match[2]
    return pins


def _run_lines(dockerfile: Path) -> list[str]:
    """The RUN instructions, continuation lines joined."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    return [line for line in text.splitlines() if line.startswith("RUN ")]


def test_every_line_of_the_lock_is_an_exact_pin() -> None:
    pins = lock()
    assert len(pins) > 30
    assert "stygig" not in pins  # the project itself is installed from the source tree
    for must in ("numpy", "onnxruntime", "onnxruntime-gpu", "fastapi", "uvicorn", "pip"):
        assert must in pins, must


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_pip_install_uses_the_lock(dockerfile: Path) -> None:
    text = dockerfile.read_text(encoding="utf-8")
    assert "COPY requirements/lock.txt ./requirements/lock.txt" in text
    installs = [
        command.strip()
        for line in _run_lines(dockerfile)
        for command in line.split("&&")
        if re.search(r"\bpip install\b", command)
    ]
    assert installs, "no pip install found"
    for command in installs:
        assert "-c requirements/lock.txt" in command, command
        # Only names: a version given here would bypass the lock's single source of truth.
        assert "==" not in command and ">=" not in command, command
    # The build backend comes from the lock too (no isolated build env fetching setuptools).
    assert any("--no-build-isolation" in c and '".[serve,aws]"' in c for c in installs)


def test_the_gpu_image_pairs_onnxruntime_gpu_with_its_cuda() -> None:
    text = (REPO / "docker" / "Dockerfile.gpu").read_text(encoding="utf-8")
    images = set(re.findall(r"^FROM (nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-\S+)", text, re.M))
    assert len(images) == 1, "both stages must use the same CUDA image"
    (_, major), *_ = images
    low, high = ORT_GPU_FOR_CUDA[int(major)]
    pinned = Version(lock()["onnxruntime-gpu"])
    assert pinned >= low and (high is None or pinned <= high), (
        f"onnxruntime-gpu {pinned} is not a CUDA {major} build; see {LOCK.name}"
    )
    assert f"onnxruntime-gpu=={pinned}" in text  # the pairing is stated beside the base image
    assert "uninstall -y onnxruntime" in text  # the CPU package does not shadow the GPU one


def test_the_image_dependencies_are_all_in_the_lock() -> None:
    """What ``pip install .[serve,aws]`` pulls: pyproject's requirements, then theirs, walked
    through the installed metadata here."""
    pins = lock()
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras_of = project["optional-dependencies"]
    roots = [*project["dependencies"], *extras_of["serve"], *extras_of["aws"]]
    environment = default_environment()
    seen: set[str] = set()
    todo: list[tuple[list[str], frozenset[str]]] = [(roots, frozenset())]
    while todo:
        requires, extras = todo.pop()
        for text in requires:
            requirement = Requirement(text)
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({**environment, "extra": extra})
                for extra in (extras or {""})
            )
            child = canonicalize_name(requirement.name)
            if wanted and child not in seen:
                seen.add(child)
                dist = metadata.distribution(child)
                todo.append((dist.requires or [], frozenset(requirement.extras)))
    assert {"numpy", "threadpoolctl", "uvicorn", "starlette", "botocore"} <= seen  # transitive too
    missing = sorted(seen - set(pins))
    assert not missing, f"installed by the images but not pinned in {LOCK.name}: {missing}"
