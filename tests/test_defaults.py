"""Every default of a setting is written once, in its settings class (config.py's sections, the
Serve app's `AppArgs`, the analysis' `AnalysisSettings` and `ScreenSettings`): a test that reads
the source, so a second copy (a parameter default, a dataclass field, a `.get(name, value)`
fallback) that could drift from the first fails here."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Any

PKG = Path(__file__).resolve().parent.parent / "wbc_ray"
# module -> settings classes in it (None: every class)
HOMES: dict[str, set[str] | None] = {
    "config.py": None,
    "serve/app.py": {"AppArgs"},
    "pipeline/_analyze.py": {"AnalysisSettings"},
    "pipeline/_screening.py": {"ScreenSettings"},
}
_MISSING = object()


def _literal(node: ast.AST | None) -> Any:
    """The literal a default is written as (`Field(x, ...)`'s x too), else _MISSING."""
    if node is None:
        return _MISSING
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Field" and node.args:
        node = node.args[0]
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _MISSING
    # None, flags and empty containers say "absent" or "off", not a value to keep in step.
    if value is None or isinstance(value, bool) or value in ((), [], {}, ""):
        return _MISSING
    return value


def _defaults(tree: ast.AST) -> list[tuple[str, Any, int, str]]:
    """(name, value, line, kind) of every literal default in a module."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults) :], a.defaults, strict=True))
            pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None]
            values = [(arg.arg, _literal(d)) for arg, d in pairs]
            out += [(name, v, node.lineno, "parameter") for name, v in values if v is not _MISSING]
        elif isinstance(node, ast.ClassDef):
            for st in node.body:
                field = isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)
                if field and (v := _literal(st.value)) is not _MISSING:
                    out.append((st.target.id, v, st.lineno, f"field of {node.name}"))  # type: ignore[union-attr]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            key = _literal(node.args[0]) if len(node.args) == 2 else _MISSING
            if isinstance(key, str) and (v := _literal(node.args[1])) is not _MISSING:
                out.append((key, v, node.lineno, ".get fallback"))
    return out


def _settings_defaults() -> dict[str, list[tuple[str, Any]]]:
    """Setting name -> [(where, default)] in the settings classes."""
    found: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for rel, classes in HOMES.items():
        tree = ast.parse((PKG / rel).read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and (classes is None or node.name in classes):
                for st in node.body:
                    if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                        found[st.target.id].append((f"{rel}:{node.name}", _literal(st.value)))
    return found


def test_every_setting_default_is_written_once() -> None:
    settings = _settings_defaults()
    copies = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        for name, value, line, kind in _defaults(ast.parse(path.read_text())):
            if name not in settings:
                continue
            homes = [f"{where}" for where, v in settings[name] if v is not _MISSING]
            own = kind.startswith("field of ") and f"{rel}:{kind[9:]}" in {w for w, _ in settings[name]}
            if own:
                continue
            same = [where for where, v in settings[name] if v == value]
            # A fallback of the setting's own type is a second default (a placeholder to show,
            # such as "?" where the setting's default is no literal, is not).
            rival = kind == ".get fallback" and any(type(v) is type(value) for _, v in settings[name])
            if same or rival:
                where = homes or "none"
                copies.append(f"{rel}:{line}: {kind} {name}={value!r} (the setting's default: {where})")
    assert not copies, "setting defaults written again:\n" + "\n".join(copies)


def test_settings_themselves_write_each_default_once() -> None:
    # A name in two settings classes with a literal default in both is two homes for one value.
    twice = {
        name: where
        for name, where in _settings_defaults().items()
        if sum(v is not _MISSING for _, v in where) > 1 and len({repr(v) for _, v in where}) == 1
    }
    assert not twice, twice


def test_the_checker_finds_a_copy(tmp_path) -> None:
    src = "def f(confidence=0.95, *, tile_threshold=0.5):\n    return d.get('tau', 0.2)\n"
    names = {(n, v) for n, v, _, _ in _defaults(ast.parse(src))}
    assert names == {("confidence", 0.95), ("tile_threshold", 0.5), ("tau", 0.2)}
