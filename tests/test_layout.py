"""Which package may import which (docs/architecture.md): read from the source, so a new import
that runs back up the layers fails here, not in a reviewer's head."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "wbc_ray"

# Leaves: small modules every package may use; they import only each other, and `ensemble`
# (numpy only, importing nothing of wbc_ray), whose fusion names the settings take.
LEAVES = {"_cache", "_digest", "config", "errors", "manifest", "scale"}
# Package -> the wbc_ray packages it may import (besides itself and the leaves).
ALLOWED: dict[str, set[str]] = {
    "slides": set(),
    "ensemble": set(),
    "store": set(),
    "models": set(),
    "domain": set(),
    "lifecycle": {"models", "slides", "ensemble", "domain"},
    "pipeline": {"slides", "store", "ensemble", "domain"},
    "training": {"models", "lifecycle", "ensemble", "slides", "pipeline", "domain"},
    "serve": {"models", "lifecycle", "pipeline", "store", "ensemble", "slides", "domain"},
    "ui": {"ensemble"},
    "deploy": set(),
}
# The entry points on top (the CLI package, batch analysis, demo) may import anything.
TOP = {"cli", "analyze", "demo", "__init__"}


def _imports(path: Path, module: str) -> set[str]:
    """The first-level wbc_ray names `path` imports (relative or absolute, also inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    parts = module.split(".")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]  # the package the dots point at
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [a.name] for a in node.names] if len(target) < 2 else [target]
            elif node.module and node.module.split(".")[0] == "wbc_ray":
                target = node.module.split(".")
                names = [target + [a.name] for a in node.names] if len(target) < 2 else [target]
            else:
                continue
            found |= {n[1] for n in names if len(n) > 1 and n[0] == "wbc_ray"}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("wbc_ray.")}
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1] + ["__init__"]  # relative imports resolve from the package
        out.append((".".join(parts), p))
    return out


def test_every_package_imports_only_what_the_architecture_allows() -> None:
    bad = []
    for module, path in _modules():
        parts = module.split(".")
        top = parts[1]
        if top in TOP:
            continue
        allowed = LEAVES | ({top} if top not in LEAVES else set())
        if top in LEAVES:
            allowed = LEAVES | {"ensemble"}
        else:
            assert top in ALLOWED, f"{path}: package {top!r} has no row in ALLOWED (add it, and to the docs)"
            allowed |= ALLOWED[top]
        for name in _imports(path, module):
            if name not in allowed:
                bad.append(f"{path.relative_to(PKG.parent)} imports wbc_ray.{name}")
    assert not bad, "imports the layering forbids:\n" + "\n".join(bad)


def test_the_checker_sees_relative_absolute_and_nested_imports(tmp_path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from ..training import train\n"
        "import wbc_ray.serve.app\n"
        "def f():\n    from wbc_ray import ui\n    from .. import pipeline\n    from . import _x\n"
    )
    assert _imports(src, "wbc_ray.models._m") == {"training", "serve", "ui", "pipeline", "models"}
