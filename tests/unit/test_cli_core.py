"""The core commands work where the shell's heavy extras are not installed.

``stygig build`` and ``stygig inspect`` need NumPy, Pillow, FAISS and ONNX Runtime only; FastAPI,
uvicorn, httpx, boto3 and torch belong to other commands. The CLI runs here with those blocked
(any import of them fails), as on a machine with only the core install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_BLOCKED = ("fastapi", "starlette", "uvicorn", "httpx", "boto3", "torch")
_RUN = f"""
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {_BLOCKED!r}:
            raise ImportError(f"{{name}} is not installed", name=name)
        return None
sys.meta_path.insert(0, Blocked())
from stygig.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _stygig(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _RUN, *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def artifact(sample: tuple[Path, Path]) -> Path:
    return sample[1]


@pytest.mark.slow
def test_build_and_inspect_run_without_the_shell_extras(artifact: Path) -> None:
    assert _stygig("build", "--help").returncode == 0
    # Every command registers its flags without its extras: training's too (torch).
    listed = _stygig("--help")
    assert listed.returncode == 0 and "train-compat" in listed.stdout and "serve" in listed.stdout
    inspected = _stygig("inspect", str(artifact))
    assert inspected.returncode == 0, inspected.stderr
    assert "checksums      ok" in inspected.stdout


def test_serve_without_its_extra_names_it(artifact: Path) -> None:
    served = _stygig("serve", "--artifact", str(artifact))
    assert served.returncode == 1
    assert "pip install 'stygig[serve]'" in served.stderr
    assert "Traceback" not in served.stderr
