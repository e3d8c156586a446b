"""Which package may import which (docs/architecture.md): read from the source, so a new import
that runs back up the layers fails here, not in a reviewer's head."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "wbc_ray"

# Leaves: small modules every package may use; they import only each other, and `ensemble`
# (numpy only, importing nothing of wbc_ray), whose fusion names the settings take.
LEAVES = {
    "_cache",
    "_digest",
    "config",
    "errors",
    "manifest",
    "release",
    "scale",
    "serve_config",
    "service_record",
}
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
    # The one-off path in one process: what the service's replicas and Ensemble run, without Ray.
    "local": {"models", "lifecycle", "ensemble", "domain"},
    "ui": {"ensemble"},
    "deploy": set(),
}
# The entry points on top (the CLI package, batch analysis, demo) may import anything.
TOP = {"cli", "analyze", "demo", "__init__"}


def _import_statements(path: Path, module: str) -> Iterator[tuple[list[str], list[str]]]:
    """(the dotted path an import names, the names it takes) of every wbc_ray import in `path`,
    relative or absolute, also inside functions."""
    parts = module.split(".")
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # the package the dots point at, then the module named
                target = parts[: len(parts) - node.level] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "wbc_ray":
                target = node.module.split(".")
            else:
                continue
            yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            yield from ((a.name.split("."), []) for a in node.names if a.name.startswith("wbc_ray."))


def _imports(path: Path, module: str) -> set[str]:
    """The first-level wbc_ray names `path` imports (relative or absolute, also inside functions)."""
    found: set[str] = set()
    for target, names in _import_statements(path, module):
        full = [target + [n] for n in names] if len(target) < 2 and names else [target]
        found |= {n[1] for n in full if len(n) > 1 and n[0] == "wbc_ray"}
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


def _module_imports(path: Path, module: str) -> set[str]:
    """The wbc_ray modules `path` imports, as dotted names (also inside functions); a name taken
    from a package (`from . import x`, `from ..models import y`) counts as the package's
    `__init__` unless it is a module of that package."""
    found: set[str] = set()
    for target, names in _import_statements(path, module):
        subs = [".".join([*target, n]) for n in names] or [".".join(target)]
        found |= {sub if sub in _MODULES else ".".join(target) for sub in subs}
    return {f if f in _MODULES else f"{f}.__init__" for f in found if f != "wbc_ray"}


_MODULES = {m for m, _ in _modules()} | {m.removesuffix(".__init__") for m, _ in _modules()}


def _graph() -> dict[str, set[str]]:
    def norm(m: str) -> str:
        return m if m.endswith("__init__") or f"{m}.__init__" not in _MODULES else f"{m}.__init__"

    return {m: {norm(t) for t in _module_imports(p, m)} - {m} for m, p in _modules()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_round_a_circle() -> None:
    # A package's __init__ re-exports its modules; a module importing its own package's __init__
    # back (instead of the sibling module) is a circle too, and is found here.
    circles = _circles(_graph())
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_circle_finder_finds_one(tmp_path) -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_packages_are_used_through_what_they_export() -> None:
    """No module reaches into another package's private modules (`models._registry`): a package
    exports, in its `__init__`, what the others use."""
    bad = []
    graph = _graph()
    for module, path in _modules():
        package = module.split(".")[1]
        for target in graph[module]:
            tparts = target.split(".")
            if (
                len(tparts) > 2
                and tparts[1] != package
                and tparts[-1].startswith("_")
                and tparts[-1] != "__init__"
            ):
                bad.append(f"{path.relative_to(PKG.parent)} imports {target}")
    assert not bad, "reaches into another package:\n" + "\n".join(sorted(bad))


def test_reading_tiles_imports_no_torch() -> None:
    """A process that only reads tiles (a Ray Data read worker; the reader thread's share of the
    one-off command) pays for no deep-learning import: the read path, planned and read for real
    on a slide fixture, leaves torch out of the process."""
    import subprocess
    import sys

    from tests.conftest import SLIDES

    slide = SLIDES / "pathml" / "small_HE.svs"
    if not slide.exists():
        pytest.skip(f"slide fixture not found at {slide}")
    code = f"""
import sys
import ray.data
import wbc_ray.pipeline, wbc_ray.analyze
from wbc_ray.slides import GridSpec, open_slide, read_tile, tile_grid, tissue_mask
with open_slide({str(slide)!r}) as s:
    g = tile_grid(s, tissue_mask(s), GridSpec(tile_px=128, mpp=1.0))
    tiles = [read_tile(s, int(x), int(y), g.level, g.read_px, 128) for x, y in g.coords[:16]]
assert len(tiles) == 16 and tiles[0].shape == (128, 128, 3), len(tiles)
print(sorted(m for m in ("torch", "torchvision", "timm", "openvino") if m in sys.modules))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
