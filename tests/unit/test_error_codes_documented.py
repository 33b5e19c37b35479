"""Every machine-readable error code StyGig emits is in ``docs/errors.md``, and every code that
page lists is still emitted somewhere in ``src/stygig`` (no stale rows).

The codes are collected from source, by parsing (no import), in these forms:

* a ``code=`` keyword whose value is a string, or a module-level constant bound to one
  (``code=_BAD_MANIFEST``, bound in any module): ``InputError("...", code="malformed_json")``;
* a class body's ``code = "..."`` (``code: str = "..."``): an error class's default code;
* a dict display with the key ``"code"``: ``{"code": "timeout", "message": ...}`` (job errors,
  JSON error bodies written by hand);
* an assignment to ``code`` (also in a tuple: ``why, code = "...", "image_not_found"``) of a
  string, or with one as a fallback: ``x if found else "endpoint_error"``,
  ``err.get("code", "server_error")``;
* a dict display bound to ``codes``: its string values (Starlette's statuses mapped to codes);
* a function's parameter named ``code`` with a string default, and the strings passed in its
  place to that function in the same module (``_bad(where, why, "archive_bad")``);
* a catalogue row's reject reason: the ``REJECT_REASONS`` tuple, ``RowError("<reason>", ...)``
  and ``Reject(row, id, "<reason>", ...)``;
* why the server closed a connection, for the access log: ``self._close("head_timeout")``,
  ``self._abort("answer_not_read")``.

A code passed through (``code=e.code``) is not new and is not collected. A constant's name in
one of these places that no module binds to a string fails the collection (its code would go
unchecked). The page lists a code as a table row whose first cell holds it in backticks.
"""

from __future__ import annotations

import ast
import functools
import gc
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "stygig"
DOC = ROOT / "docs" / "errors.md"

#: What a code looks like (lower snake case); other strings in the same places are not codes
#: (AWS's ``"Error"``/``"Code"`` keys, an empty fallback).
CODE = re.compile(r"[a-z][a-z0-9_]*")
_BACKTICKED = re.compile(r"`([a-z][a-z0-9_]*)`")
#: Calls whose first argument is why the server closed a connection (serving/protocol.py).
_CLOSE_METHODS = frozenset({"_close", "_abort"})


class UnresolvedConstant(Exception):
    """A code given by a constant's name that no parsed module binds to a string."""


def _string(node: ast.expr | None, constants: dict[str, str] | None) -> str | None:
    """``node``'s value when it is a string constant or a constant's name bound to one (none
    resolved when ``constants`` is None); None for anything else (a variable: a code passed
    through). A constant's name bound to no string is :class:`UnresolvedConstant`: the code
    it stands for would go unchecked."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if constants is not None and isinstance(node, ast.Name) and _constant_name(node.id):
        if node.id not in constants:
            raise UnresolvedConstant(f"line {node.lineno}: {node.id}")
        return constants[node.id]
    return None


def _fallbacks(node: ast.expr, constants: dict[str, str]) -> Iterator[str]:
    """The strings an expression assigned to ``code`` may evaluate to: itself, either branch
    of ``a if c else b``, either side of ``a or b``, the default of ``x.get(key, default)``,
    through ``str(...)``."""
    value = _string(node, constants)
    if value is not None:
        yield value
    elif isinstance(node, ast.IfExp):
        yield from _fallbacks(node.body, constants)
        yield from _fallbacks(node.orelse, constants)
    elif isinstance(node, ast.BoolOp):
        for part in node.values:
            yield from _fallbacks(part, constants)
    elif isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id == "str" and len(node.args) == 1:
            yield from _fallbacks(node.args[0], constants)
        elif isinstance(func, ast.Attribute) and func.attr == "get" and len(node.args) == 2:
            yield from _fallbacks(node.args[1], constants)


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """The module-level names bound to a string: ``_BAD_MANIFEST = "artifact_bad_manifest"``."""
    out: dict[str, str] = {}
    for node in tree.body:
        targets: list[ast.expr]
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        text = _string(value, None)
        for target in targets:
            # A constant's name (``_BAD_MANIFEST``), never a module variable that happens to
            # share a local's name (``code``).
            if text is not None and isinstance(target, ast.Name) and _constant_name(target.id):
                out[target.id] = text
    return out


def _constant_name(name: str) -> bool:
    return name.lstrip("_").isupper()


def _code_parameters(
    tree: ast.Module, constants: dict[str, str]
) -> dict[str, tuple[int, str | None, int]]:
    """Functions of the module taking a ``code`` parameter: name -> (its position among the
    positional parameters, or -1 when keyword-only; its default string, if any; the line)."""
    out: dict[str, tuple[int, str | None, int]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        names = [a.arg for a in positional]
        if "code" in names:
            index = names.index("code")
            first_default = len(positional) - len(args.defaults)
            default = args.defaults[index - first_default] if index >= first_default else None
            out[node.name] = (index, _string(default, constants), node.lineno)
        else:
            kwonly = [a.arg for a in args.kwonlyargs]
            if "code" in kwonly:
                default = args.kw_defaults[kwonly.index("code")]
                out[node.name] = (-1, _string(default, constants), node.lineno)
    return out


def _codes_in_tree(tree: ast.Module, constants: dict[str, str]) -> Iterator[tuple[str, int]]:
    """``(code, line)`` for every code the module's source emits (see the module docstring)."""
    parameters = _code_parameters(tree, constants)
    for _, default, line in parameters.values():
        if default is not None:
            yield default, line
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "code":
                    value = _string(keyword.value, constants)
                    if value is not None:
                        yield value, line
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            attr = func.attr if isinstance(func, ast.Attribute) else None
            args = node.args
            if name == "RowError" and args:
                value = _string(args[0], constants)
            elif name == "Reject" and len(args) > 2:
                value = _string(args[2], constants)
            elif attr in _CLOSE_METHODS and args:
                value = _string(args[0], constants)
            elif name in parameters and 0 <= parameters[name][0] < len(args):
                value = _string(args[parameters[name][0]], constants)
            else:
                value = None
            if value is not None:
                yield value, line
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    target, value_node = stmt.targets[0], stmt.value
                elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                    target, value_node = stmt.target, stmt.value
                else:
                    continue
                if isinstance(target, ast.Name) and target.id == "code":
                    value = _string(value_node, constants)
                    if value is not None:
                        yield value, stmt.lineno
        elif isinstance(node, ast.Dict):
            for key, item in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "code":
                    value = _string(item, constants)
                    if value is not None:
                        yield value, line
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                yield from ((v, line) for v in _assigned(target, node.value, constants))


def _assigned(target: ast.expr, value: ast.expr, constants: dict[str, str]) -> Iterator[str]:
    """The codes an assignment ``target = value`` binds (see :func:`_codes_in_tree`)."""
    if isinstance(target, ast.Name):
        if target.id == "code":
            yield from _fallbacks(value, constants)
        elif target.id in ("codes", "CODES") and isinstance(value, ast.Dict):
            yield from (s for v in value.values if (s := _string(v, constants)) is not None)
        elif target.id == "REJECT_REASONS" and isinstance(value, ast.Tuple | ast.List):
            yield from (s for v in value.elts if (s := _string(v, constants)) is not None)
    elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
        for part, part_value in zip(target.elts, value.elts, strict=False):
            yield from _assigned(part, part_value, constants)


#: Text every module that emits a code holds (one of the forms above); the others are not
#: parsed. A constant bound in a module left out is still caught: its use is
#: :class:`UnresolvedConstant`.
_RELEVANT = re.compile(
    r"\bcodes?\b|\bRowError\b|\bReject\(|\bREJECT_REASONS\b|\._close\(|\._abort\("
)


def collect_codes(paths: Iterable[Path]) -> dict[str, list[str]]:
    """Every code emitted in ``paths`` (Python files), with where: ``{code: ["file:line"]}``.
    A constant a module uses for a code may be bound in another module (one binding of it in
    all of ``paths``)."""
    enabled = gc.isenabled()
    gc.disable()  # ~300,000 AST nodes and no cycles: collections while parsing doubled the time
    try:
        return _collect(paths)
    finally:
        if enabled:
            gc.enable()


def _collect(paths: Iterable[Path]) -> dict[str, list[str]]:
    texts = {path: path.read_text(encoding="utf-8") for path in paths}
    trees = {
        path: ast.parse(text, str(path)) for path, text in texts.items() if _RELEVANT.search(text)
    }
    every: dict[str, set[str]] = defaultdict(set)
    local = {path: _module_constants(tree) for path, tree in trees.items()}
    for constants in local.values():
        for name, value in constants.items():
            every[name].add(value)
    shared = {name: next(iter(values)) for name, values in every.items() if len(values) == 1}
    found: dict[str, list[str]] = defaultdict(list)
    for path, tree in trees.items():
        try:
            codes = list(_codes_in_tree(tree, {**shared, **local[path]}))
        except UnresolvedConstant as e:
            raise UnresolvedConstant(f"{path}: {e}: a code's constant bound in no module") from None
        for code, line in codes:
            if CODE.fullmatch(code):
                found[code].append(f"{path.name}:{line}")
    return dict(found)


def documented_codes(text: str) -> set[str]:
    """The codes a page lists: backticked in the first cell of a table row."""
    out: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("|") or re.fullmatch(r"[|:\-\s]+", line):
            continue
        first = line.strip("|").split("|", 1)[0]
        out.update(_BACKTICKED.findall(first))
    return out


@functools.cache
def _emitted() -> dict[str, list[str]]:
    """The codes of ``src/stygig`` (parsed once for the tests below)."""
    return collect_codes(sorted(SRC.rglob("*.py")))


def test_every_emitted_code_is_documented() -> None:
    emitted = _emitted()
    assert len(emitted) > 100, "the collector found too few codes: has the source moved?"
    missing = sorted(set(emitted) - documented_codes(DOC.read_text(encoding="utf-8")))
    assert not missing, "codes emitted but not in docs/errors.md: " + "; ".join(
        f"{code} ({', '.join(emitted[code][:3])})" for code in missing
    )


def test_every_documented_code_is_emitted() -> None:
    documented = documented_codes(DOC.read_text(encoding="utf-8"))
    stale = sorted(documented - set(_emitted()))
    assert not stale, f"docs/errors.md lists codes nothing emits any more: {stale}"


_PATTERNS = """
LOCAL = "zz_constant"

class FakeError(Exception):
    code = "zz_class"

class TypedError(Exception):
    code: str = "zz_annotated"

def _bad(where, why, code="zz_param_default"):
    return FakeError(code=code)

def f(e, found, err, closing):
    raise FakeError("x", code="zz_keyword")
    raise FakeError("x", code=LOCAL)
    _bad("w", "y", "zz_param_passed")
    error = {"code": "zz_dict", "message": "m"}
    why, code = "text", "zz_tuple"
    code = found.group(1) if found else "zz_ifexp"
    code = str(err.get("code", "zz_get_default"))
    codes = {404: "zz_codes_value"}
    closing._close("zz_closed")
    closing._abort("zz_aborted")
    raise RowError("zz_row_reason", "detail")
    Reject(1, "id", "zz_reject_reason", "detail", {})
    code = getattr(e, "sqlite_errorcode", None)
    code = str(e.response.get("Error", {}).get("Code", ""))

REJECT_REASONS = ("zz_reason_listed",)
"""


def test_the_collector_sees_every_pattern(tmp_path: Path) -> None:
    """Each form the module docstring names is found, and strings that are no codes (AWS's
    keys, ``getattr``'s attribute name, an empty fallback) are not."""
    source = tmp_path / "patterns.py"
    source.write_text(_PATTERNS, encoding="utf-8")
    found = set(collect_codes([source]))
    expected = {
        "zz_constant",  # through code=LOCAL
        "zz_class",
        "zz_annotated",
        "zz_param_default",
        "zz_keyword",
        "zz_param_passed",
        "zz_dict",
        "zz_tuple",
        "zz_ifexp",
        "zz_get_default",
        "zz_codes_value",
        "zz_closed",
        "zz_aborted",
        "zz_row_reason",
        "zz_reject_reason",
        "zz_reason_listed",
    }
    assert found == expected


def test_a_constant_bound_nowhere_fails(tmp_path: Path) -> None:
    source = tmp_path / "unbound.py"
    source.write_text('raise InputError("x", code=NOWHERE_BOUND)\n', encoding="utf-8")
    with pytest.raises(UnresolvedConstant, match="NOWHERE_BOUND"):
        collect_codes([source])


def test_an_undocumented_code_fails(tmp_path: Path) -> None:
    """A new code in a copy of a source file is seen as undocumented."""
    original = SRC / "errors.py"
    copy = tmp_path / "errors.py"
    copy.write_text(
        original.read_text(encoding="utf-8")
        + '\n\ndef _new() -> StygigError:\n    return InputError("x", code="zz_fake")\n',
        encoding="utf-8",
    )
    documented = documented_codes(DOC.read_text(encoding="utf-8"))
    assert set(collect_codes([copy])) - documented == {"zz_fake"}
