"""The layout of ``src/stygig`` is core vs shell, and the core never imports the shell.

The **core** is what answers a query and builds an artifact: catalogue, images, encoders,
colour and harmony, index, artifact and build, scoring and the recommender, the compatibility
model serving reads (``stygig.compat``), storage. The **shell** drives the core from outside:

* ``stygig.cli``, ``stygig.arguments`` — the ``stygig`` command and its argument types;
* ``stygig.serving``, ``stygig.jobs``, ``stygig.batch`` — the HTTP server, async jobs, batch runs;
* ``stygig.deploy``, ``stygig.loadtest`` — containers, SageMaker, load against a server;
* ``stygig.evaluation``, ``stygig.training`` — ``stygig eval`` and ``stygig train-compat``;
* ``stygig.auth``, ``stygig.locations`` — who may call a server and which stored locations a
  client may name: decisions of the boundary (server, job worker, clients), never of the
  recommender, which answers whatever it is handed;
* ``stygig.sample_catalog``, ``stygig.sample_drawing``, ``stygig.demo_examples`` — demo data
  for ``stygig sample-catalog`` and ``pick-examples`` and the tests; no query or build needs
  them.

Every module not named above is core. The rule is checked on source, not by importing, so it
holds on every path, not only on the ones a test happens to run: each module is parsed and
every import counts, wherever it is — at the top, inside a function, under ``TYPE_CHECKING`` —
and so does a string naming a shell module (a lazy export table, ``import_module(...)``).
The core also never imports the web stack (FastAPI, Starlette, uvicorn, httpx): that is the
serving extra's, and ``stygig build`` / ``inspect`` run without it (``test_cli_core.py``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import stygig

SRC = Path(stygig.__file__).parent

SHELL = (
    "stygig.arguments",
    "stygig.auth",
    "stygig.batch",
    "stygig.cli",
    "stygig.demo_examples",
    "stygig.deploy",
    "stygig.distributed",
    "stygig.doctor",
    "stygig.evaluation",
    "stygig.jobs",
    "stygig.loadtest",
    "stygig.locations",
    "stygig.sample_catalog",
    "stygig.sample_drawing",
    "stygig.serving",
    "stygig.training",
)
WEB_STACK = ("fastapi", "starlette", "uvicorn", "httpx")
_MODULE_PATH = re.compile(r"stygig(\.\w+)+")


def _within(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, *, package: bool) -> Iterator[tuple[str, int]]:
    """Every module name ``source`` imports or names in a string, with its line.

    Relative imports are resolved against ``module`` (a package when ``package``); for
    ``from a import b`` both ``a`` and ``a.b`` are yielded, since ``b`` may be a submodule.
    """
    here = module.split(".") if package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            yield name, node.lineno
            for alias in node.names:
                yield f"{name}.{alias.name}", node.lineno
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _MODULE_PATH.fullmatch(node.value)
        ):
            yield node.value, node.lineno


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        yield _module_name(path), path


def test_the_core_never_imports_the_shell() -> None:
    broken: dict[tuple[str, str, int], str] = {}  # (module, file, line) -> what it imports
    for module, path in _modules():
        if _within(module, SHELL):
            continue
        source = path.read_text(encoding="utf-8")
        for name, line in imported_names(source, module, package=path.name == "__init__.py"):
            if _within(name, SHELL) or name.split(".")[0] in WEB_STACK:
                key = (module, str(path.relative_to(SRC.parent)), line)
                broken[key] = min(broken.get(key, name), name, key=len)  # a.b, not a.b.Name
    assert not broken, "core modules import the shell (module -> import, file:line):\n" + "\n".join(
        f"  {module} -> {name} ({file}:{line})"
        for (module, file, line), name in sorted(broken.items())
    )


def test_every_shell_name_is_a_module() -> None:
    """A renamed shell module must be renamed here too, or the rule would silently check less."""
    modules = {m for m, _ in _modules()}
    assert [s for s in SHELL if s not in modules] == []


def test_the_checker_sees_imports_anywhere() -> None:
    source = """
from typing import TYPE_CHECKING
from . import serving
from ..cli import main
if TYPE_CHECKING:
    from stygig.jobs.store import JobStore
def later():
    import stygig.deploy.package
    return {"app": "stygig.serving.app", "prose": "see stygig.cli for the command"}
"""
    names = {n for n, _ in imported_names(source, "stygig.compat.model", package=False)}
    # ``from . import serving`` in stygig.compat.model is stygig.compat.serving: not the shell.
    assert sorted(n for n in names if _within(n, SHELL)) == [
        "stygig.cli",
        "stygig.cli.main",
        "stygig.deploy.package",
        "stygig.jobs.store",
        "stygig.jobs.store.JobStore",
        "stygig.serving.app",
    ]
