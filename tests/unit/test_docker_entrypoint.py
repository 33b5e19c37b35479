"""docker/serve, run outside a container with a fake ``stygig`` that records its arguments."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVE = REPO / "docker" / "serve"

FAKE = """#!/bin/sh
exec python3 -c 'import json, os, sys; print(json.dumps({"argv": sys.argv[1:], "pid": os.getppid(), "emf": os.environ.get("STYGIG_EMF")}))' "$@"
"""


def _run(
    tmp_path: Path, *args: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "bin" / "stygig"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STYGIG_", "SAGEMAKER_"))}
    full = {**base, "PATH": f"{fake.parent}:{base['PATH']}", **env}
    return subprocess.run(
        ["/bin/sh", str(SERVE), *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=10,
        cwd=cwd,
    )


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    art = tmp_path / "model"
    art.mkdir()
    (art / "manifest.json").write_text("{}")
    return art


def test_is_an_executable_posix_script() -> None:
    assert os.access(SERVE, os.X_OK)
    assert SERVE.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(SERVE)], check=True)


def test_execs_stygig_serve_on_the_artifact_and_port(tmp_path: Path, artifact: Path) -> None:
    out = _run(tmp_path, "serve", STYGIG_ARTIFACT=str(artifact), SAGEMAKER_BIND_TO_PORT="9000")
    assert out.returncode == 0, out.stderr
    argv = json.loads(out.stdout)["argv"]
    assert argv == ["serve", "--artifact", str(artifact), "--host", "0.0.0.0", "--port", "9000"]


def test_defaults_and_extra_flags(tmp_path: Path, artifact: Path) -> None:
    out = _run(
        tmp_path, STYGIG_ARTIFACT=str(artifact), STYGIG_SERVE_ARGS="--max-batch 16 --no-verify"
    )
    assert out.returncode == 0, out.stderr
    argv = json.loads(out.stdout)["argv"]
    assert argv[argv.index("--port") + 1] == "8080"
    assert argv[-3:] == ["--max-batch", "16", "--no-verify"]


def test_extra_flags_are_never_expanded_as_a_glob(tmp_path: Path, artifact: Path) -> None:
    """Review, session 49: a "*" in STYGIG_SERVE_ARGS matched the working folder's file
    names, and a file named like a flag became one."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "--admin-token=leak").write_text("")
    out = _run(tmp_path, cwd=work, STYGIG_ARTIFACT=str(artifact), STYGIG_SERVE_ARGS="--x *")
    assert out.returncode == 0, out.stderr
    argv = json.loads(out.stdout)["argv"]
    assert argv[-2:] == ["--x", "*"] and "--admin-token=leak" not in argv


def test_exec_replaces_the_shell(tmp_path: Path, artifact: Path) -> None:
    # With exec, the fake's parent is the shell's parent (subprocess), not a shell left waiting.
    out = _run(tmp_path, "serve", STYGIG_ARTIFACT=str(artifact))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pid"] == os.getpid()


def test_refuses_a_folder_without_an_artifact(tmp_path: Path) -> None:
    out = _run(tmp_path, "serve", STYGIG_ARTIFACT=str(tmp_path / "empty"))
    assert out.returncode == 4
    assert "no StyGig artifact" in out.stderr


def test_emf_lines_are_on_by_default_in_the_container(tmp_path: Path, artifact: Path) -> None:
    """SageMaker never scrapes /metrics: the entrypoint turns the CloudWatch EMF lines on."""
    out = _run(tmp_path, "serve", STYGIG_ARTIFACT=str(artifact))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["emf"] == "1"
    out = _run(tmp_path, "serve", STYGIG_ARTIFACT=str(artifact), STYGIG_EMF="0")
    assert json.loads(out.stdout)["emf"] == "0"  # the operator's choice is kept
