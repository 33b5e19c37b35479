from __future__ import annotations

import subprocess
import sys

import pytest

import stygig


def test_every_export_resolves_and_is_listed() -> None:
    for name in stygig.__all__:
        assert getattr(stygig, name) is not None, name
    assert sorted(stygig._EXPORTS) == sorted(n for n in stygig.__all__ if n != "__version__")


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        _ = stygig.NotAThing  # type: ignore[attr-defined]


def test_import_is_light_and_core_never_imports_the_shell() -> None:
    code = (
        "import sys, stygig.engine, stygig.build, stygig.artifact;"
        "bad = [m for m in sys.modules if m.startswith(('stygig.serving', 'stygig.cli',"
        " 'stygig.jobs', 'stygig.deploy', 'torch', 'fastapi'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
