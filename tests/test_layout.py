"""The house rules of DESIGN.md ("Layout", "Layers"), checked statically on every module of probdiff.

The source of every module is parsed with ``ast`` (nothing is imported or run), and every import is
collected, those inside functions included. The checks:

* layers: an import points to its own layer or a lower one (:data:`LAYERS`); every module is in the table;
* cycles: no import cycle between modules, nor between packages (a package is the first two dotted
  components of a module's name, e.g. ``probdiff.likelihood``);
* size: no module over :data:`LIMIT` lines;
* init: an ``__init__.py`` holds a docstring, imports and ``__all__`` only (and literal ``__version__``-style
  metadata);
* all: a module's ``__all__`` lists every public class and function it defines and only names it binds; a
  package ``__init__``'s ``__all__`` is exactly the set of public names it imports;
* hasattr: no ``hasattr`` in the package (capabilities are marker base classes);
* private: no import of a third party's private module or name (``torchdiffeq._impl``).

Each check is also run on a small synthetic package with one planted violation of each kind, so that none
of them passes vacuously.
"""

from __future__ import annotations

import ast
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "probdiff"
LIMIT = 400

#: Layers from bottom to top: a module may import its own layer or a lower one. ``x.*`` is the package ``x``
#: and everything under it; any other entry is one module.
LAYERS = (
    ("utilities", ("probdiff._util", "probdiff.lattice")),
    ("processes", ("probdiff.processes.*", "probdiff.timevars")),
    ("models", ("probdiff.models.*", "probdiff.oracles.*", "probdiff.oracles_discrete")),
    ("reverse", ("probdiff.reverse.*", "probdiff.reverse_discrete")),
    ("sampling", ("probdiff.solvers.*", "probdiff.placement", "probdiff.sampling")),
    ("measures", ("probdiff.likelihood.*", "probdiff.losses.*", "probdiff.geometry", "probdiff.ppl",
                  "probdiff.distribution", "probdiff.conditioning", "probdiff.guidance")),
    ("tuning", ("probdiff.tuning", "probdiff.tuning_multistep", "probdiff.tuning_local", "probdiff.grids.*")),
    ("applications", ("probdiff.data", "probdiff.nn.*", "probdiff.train.*", "probdiff.checkpoint", "probdiff.recipes.*",
                      "probdiff.cli.*", "probdiff.testing.*", "probdiff.integrations.*")),
    ("root", ("probdiff",)),
)

CHECKS = ("layers", "cycles", "size", "init", "all", "hasattr", "private")


# ==================================================================== reading the package
@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    is_package: bool


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``target`` (a module of the package) at ``line`` of its source."""

    importer: str
    target: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.importer} -> {self.target} (line {self.line}: {self.text})"


def read_package(package_dir: Path) -> dict[str, Module]:
    """Every module under ``package_dir`` by dotted name (``pkg/a/__init__.py`` is ``pkg.a``)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        source = path.read_text(encoding="utf-8")
        out[name] = Module(name, path, ast.parse(source, str(path)), len(source.splitlines()), is_package)
    return out


def _raw_imports(module: Module):
    """``(node, source, name)`` for every import in the module (``name`` None for ``import source``);
    relative imports resolved to absolute dotted paths."""
    base = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                source = ".".join(stem + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                yield node, source, alias.name


def _longest_known(dotted: str, known) -> str:
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted


def internal_edges(modules: dict[str, Module]) -> list[Edge]:
    """The imports between modules of the package. ``from P import m`` with ``m`` a module is an edge to
    ``P.m``, and to ``P`` too unless ``P`` is the importer's own package or an ancestor of it (those are
    already initialised); ``from P import name`` is an edge to ``P``."""
    root = next(iter(modules)).split(".")[0]
    edges = []
    for module in modules.values():
        for node, source, name in _raw_imports(module):
            if source.split(".")[0] != root:
                continue
            text = ast.unparse(node)
            targets = set()
            if name is not None and f"{source}.{name}" in modules:
                targets.add(f"{source}.{name}")
                ancestor = module.name == source or module.name.startswith(source + ".")
                if not ancestor:
                    targets.add(_longest_known(source, modules))
            else:
                targets.add(_longest_known(source, modules) or source)
            edges += [Edge(module.name, t, node.lineno, text) for t in sorted(targets) if t != module.name]
    return edges


# ==================================================================== the checks
def _layers_of(name: str, table) -> list[int]:
    found = []
    for index, (_, patterns) in enumerate(table):
        for pattern in patterns:
            base = pattern[:-2] if pattern.endswith(".*") else None
            if name == pattern or (base is not None and (name == base or name.startswith(base + "."))):
                found.append(index)
    return found


def layer_of(name: str, table) -> int | None:
    """Index of the layer of module ``name`` in ``table`` (None if no entry matches)."""
    found = _layers_of(name, table)
    return found[0] if found else None


def check_layers(modules, edges, table) -> list[str]:
    problems = [f"{name} is in no layer: add it to LAYERS in tests/test_layout.py (DESIGN.md, 'Layers')"
                for name in modules if layer_of(name, table) is None]
    problems += [f"{name} matches more than one layer ({', '.join(table[i][0] for i in _layers_of(name, table))}): "
                 "fix LAYERS in tests/test_layout.py" for name in modules if len(set(_layers_of(name, table))) > 1]
    for edge in edges:
        lo, hi = layer_of(edge.target, table), layer_of(edge.importer, table)
        if lo is not None and hi is not None and lo > hi:
            problems.append(f"upward import: {edge} — {edge.importer} is in layer '{table[hi][0]}', "
                            f"{edge.target} in layer '{table[lo][0]}'")
    return problems


def strongly_connected(graph: dict[str, set]) -> list[list[str]]:
    """Components of more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


def package_of(name: str) -> str:
    return ".".join(name.split(".")[:2])


def check_cycles(modules, edges) -> list[str]:
    root = next(iter(modules)).split(".")[0]
    problems = []
    for kind, key in (("module", lambda n: n), ("package", package_of)):
        graph, via = {}, {}
        for edge in edges:
            a, b = key(edge.importer), key(edge.target)
            if a == b or (kind == "package" and root in (a, b)):
                continue
            graph.setdefault(a, set()).add(b)
            via.setdefault((a, b), edge)
        for comp in strongly_connected(graph):
            inside = [str(via[a, b]) for a in comp for b in sorted(graph.get(a, ())) if b in comp]
            problems.append(f"{kind} cycle between {', '.join(comp)}; imports:\n      " + "\n      ".join(inside))
    return problems


def check_size(modules) -> list[str]:
    return [f"{m.name} ({m.path.name}) has {m.lines} lines (limit {LIMIT})"
            for m in modules.values() if m.lines > LIMIT]


def _all_of(module: Module):
    """``(names, problem)``: the literal ``__all__`` of the module (None if it has none)."""
    for stmt in module.tree.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                try:
                    names = ast.literal_eval(stmt.value)
                except (ValueError, TypeError, SyntaxError):
                    return None, f"{module.name}: __all__ must be a literal list of strings (line {stmt.lineno})"
                if (isinstance(stmt, ast.AugAssign) or not isinstance(names, (list, tuple))
                        or not all(isinstance(n, str) for n in names)):
                    return None, f"{module.name}: __all__ must be one literal list of strings (line {stmt.lineno})"
                return list(names), None
    return None, None


def _is_metadata(stmt) -> bool:
    """``__version__ = "0.1.0"`` and the like: a dunder name bound to a string literal."""
    return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
            and stmt.targets[0].id.startswith("__") and stmt.targets[0].id != "__all__"
            and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str))


def check_inits(modules) -> list[str]:
    problems = []
    for m in modules.values():
        if not m.is_package:
            continue
        for i, stmt in enumerate(m.tree.body):
            docstring = i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            is_all = isinstance(stmt, ast.Assign) and [ast.unparse(t) for t in stmt.targets] == ["__all__"]
            if not (docstring or is_all or _is_metadata(stmt) or isinstance(stmt, (ast.Import, ast.ImportFrom))):
                code = ast.unparse(stmt).splitlines()[0][:70]
                problems.append(f"{m.name} (__init__.py line {stmt.lineno}): {code!r} — an __init__ holds only a "
                                "docstring, imports and __all__")
    return problems


def _top_level(body):
    """Top-level statements, looking into ``if``/``try``/``with`` blocks."""
    for stmt in body:
        yield stmt
        for block in ("body", "orelse", "finalbody"):
            if isinstance(stmt, (ast.If, ast.Try, ast.With)) and getattr(stmt, block, None):
                yield from _top_level(getattr(stmt, block))
        for handler in getattr(stmt, "handlers", ()):
            yield from _top_level(handler.body)


def _imported_names(stmt) -> list[str]:
    if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
        return []
    if isinstance(stmt, ast.ImportFrom):
        return [a.asname or a.name for a in stmt.names]
    if isinstance(stmt, ast.Import):
        return [a.asname or a.name.split(".")[0] for a in stmt.names]
    return []


def check_all(modules) -> list[str]:
    problems = []
    for m in modules.values():
        names, problem = _all_of(m)
        if problem:
            problems.append(problem)
            continue
        stmts = list(_top_level(m.tree.body))
        imported = {n for s in stmts for n in _imported_names(s)}
        defined = {s.name for s in stmts if isinstance(s, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))}
        assigned = {t.id for s in stmts if isinstance(s, (ast.Assign, ast.AnnAssign))
                    for target in (s.targets if isinstance(s, ast.Assign) else [s.target])
                    for t in ast.walk(target) if isinstance(t, ast.Name)}
        listed = set(names or ())
        if names is not None and len(names) != len(listed):
            problems.append(f"{m.name}: __all__ lists a name twice")
        if m.is_package:
            public = {n for n in imported if not n.startswith("_")}
            if public - listed:
                problems.append(f"{m.name}: __all__ misses imported public names {sorted(public - listed)}")
            if listed - public:
                problems.append(f"{m.name}: __all__ lists names the __init__ does not import {sorted(listed - public)}")
            continue
        public = {n for n in defined if not n.startswith("_")}
        if public - listed:
            problems.append(f"{m.name}: __all__ {'misses' if names is not None else 'is missing; it would list'} "
                            f"the public classes/functions {sorted(public - listed)}")
        unbound = listed - defined - imported - assigned
        if unbound:
            problems.append(f"{m.name}: __all__ lists names the module does not bind {sorted(unbound)}")
    return problems


def check_hasattr(modules) -> list[str]:
    return [f"{m.name} line {node.lineno}: hasattr — use a marker base class or a method with a generic fallback"
            for m in modules.values() for node in ast.walk(m.tree)
            if (isinstance(node, ast.Name) and node.id == "hasattr")
            or (isinstance(node, ast.Attribute) and node.attr == "hasattr")]


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not (part.startswith("__") and part.endswith("__"))
               for part in dotted.split("."))


def check_private(modules) -> list[str]:
    root = next(iter(modules)).split(".")[0]
    problems = []
    for m in modules.values():
        for node, source, name in _raw_imports(m):
            dotted = source if name is None else f"{source}.{name}"
            if source.split(".")[0] != root and name != "*" and _private(dotted):
                problems.append(f"{m.name} line {node.lineno}: {ast.unparse(node)} — {dotted} is private to a "
                                "third-party package")
    return problems


def layout_problems(package_dir: Path, table=LAYERS) -> dict[str, list[str]]:
    """Every violation of the house rules in the package at ``package_dir``, by check."""
    modules = read_package(package_dir)
    edges = internal_edges(modules)
    return {
        "layers": check_layers(modules, edges, table),
        "cycles": check_cycles(modules, edges),
        "size": check_size(modules),
        "init": check_inits(modules),
        "all": check_all(modules),
        "hasattr": check_hasattr(modules),
        "private": check_private(modules),
    }


@functools.lru_cache(maxsize=None)
def _probdiff_problems() -> dict[str, list[str]]:
    return layout_problems(PACKAGE_DIR)


# ==================================================================== the package obeys the rules
@pytest.mark.parametrize("check", CHECKS)
def test_probdiff_obeys_the_house_rule(check):
    problems = _probdiff_problems()[check]
    assert not problems, f"{check}: {len(problems)} problem(s)\n  " + "\n  ".join(problems)


def test_the_walk_sees_the_whole_package():
    modules = read_package(PACKAGE_DIR)
    assert {"probdiff", "probdiff.processes.gaussian", "probdiff.testing.strategies"} <= set(modules)
    assert len(internal_edges(modules)) > 2 * len(modules)


# ==================================================================== the checks can fail
SYNTHETIC_LAYERS = (
    ("low", ("pkg.low.*", "pkg.util")),
    ("high", ("pkg.high", "pkg.big", "pkg.low.d")),
    ("root", ("pkg",)),
)

SYNTHETIC = {
    "__init__.py": '"""Root."""\nfrom .high import Public\nX = 1\n__version__ = "1.0"\n__all__ = ["Public", "Extra"]\n',
    "high.py": '"""High."""\n__all__ = ["Public"]\n\n\nclass Public:\n    pass\n',
    "util.py": ('"""Util: upward lazy import, hasattr, private third-party imports, no __all__."""\n'
                "import torchsde._core\nfrom torchdiffeq import _impl\nfrom __future__ import annotations\n"
                "from .low.d import D\n\n\ndef helper():\n    from . import high\n    return hasattr(high, 'x')\n"),
    "low/__init__.py": '"""Low."""\nfrom .a import A\n__all__ = ["A"]\n',
    "low/a.py": '"""A."""\nfrom .b import B\n__all__ = ["A", "Ghost"]\n\n\nclass A:\n    pass\n',
    "low/b.py": '"""B."""\n__all__ = ["B"]\n\n\ndef B():\n    from .a import A\n    return A\n',
    "low/c.py": '"""C: closes the package cycle pkg.low -> pkg.util -> pkg.low without a module cycle."""\n'
                'from ..util import helper\n__all__ = []\n',
    "low/d.py": '"""D."""\n__all__ = ["D"]\nD = 1\n',
    "low/e.py": '"""E: a name from the root package, a computed __all__."""\nfrom .. import Public\n'
                '__all__ = sorted(["Public"])\n',
    "big.py": '"""Big."""\n__all__ = []\n' + "x = 1\n" * 400,
    "stray.py": '"""A module the table does not know."""\n__all__ = []\n',
}


def _synthetic(tmp_path: Path, files=SYNTHETIC) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_every_check_catches_its_planted_violation(tmp_path):
    problems = layout_problems(_synthetic(tmp_path), SYNTHETIC_LAYERS)
    text = {check: "\n".join(found) for check, found in problems.items()}
    assert "pkg.stray is in no layer: add it to LAYERS" in text["layers"]
    assert "upward import: pkg.util -> pkg.high (line 9: from . import high)" in text["layers"]
    assert "pkg.low.d matches more than one layer (low, high)" in text["layers"]
    assert "upward import: pkg.low.e -> pkg (line 2: from .. import Public)" in text["layers"]
    assert "module cycle between pkg.low.a, pkg.low.b" in text["cycles"]
    assert "package cycle between pkg.low, pkg.util" in text["cycles"]
    assert "pkg.low.c -> pkg.util (line 2: from ..util import helper)" in text["cycles"]
    assert problems["size"] == ["pkg.big (big.py) has 402 lines (limit 400)"]
    assert len(problems["init"]) == 1 and "pkg (__init__.py line 3): 'X = 1'" in text["init"]  # __version__ is fine
    assert "pkg: __all__ lists names the __init__ does not import ['Extra']" in text["all"]
    assert "pkg.util: __all__ is missing; it would list the public classes/functions ['helper']" in text["all"]
    assert "pkg.low.a: __all__ lists names the module does not bind ['Ghost']" in text["all"]
    assert "pkg.low.e: __all__ must be a literal list of strings (line 3)" in text["all"]
    assert problems["hasattr"] == ["pkg.util line 10: hasattr — use a marker base class or a method with a "
                                   "generic fallback"]
    assert len(problems["private"]) == 2
    assert "torchsde._core is private" in text["private"] and "torchdiffeq._impl is private" in text["private"]


def test_a_package_within_the_rules_has_no_problems(tmp_path):
    files = {
        "__init__.py": '"""Root."""\nfrom . import high\nfrom .low import A as Renamed\n__all__ = ["high", "Renamed"]\n',
        "high.py": '"""High."""\nimport torch.nn.functional\nfrom .low.a import A\n__all__ = ["f", "A"]\n\n\n'
                   "def f():\n    from .low import a\n    return a\n",
        "low/__init__.py": '"""Low."""\nfrom .a import A\n__all__ = ["A"]\n',
        "low/a.py": '"""A."""\nfrom __future__ import annotations\n__all__ = ["A"]\n\n\nclass A:\n    pass\n',
    }
    problems = layout_problems(_synthetic(tmp_path, files), SYNTHETIC_LAYERS)
    assert problems == {check: [] for check in CHECKS}


def test_from_a_package_import_a_submodule_is_an_edge_to_the_submodule_alone(tmp_path):
    """``from . import b`` needs module b, not the package's __init__ (already being initialised); ``from . import
    A`` of a name defined by the __init__ needs the __init__."""
    files = {"__init__.py": '"""R."""\nfrom .low.a import A\n__all__ = ["A"]\n',
             "low/__init__.py": '"""L."""\nfrom .a import A\nfrom . import b\n__all__ = ["A", "b"]\n',
             "low/a.py": '"""A."""\nfrom . import b\n__all__ = ["A"]\nA = b\n',
             "low/b.py": '"""B."""\n__all__ = ["name"]\nname = 1\n',
             "low/c.py": '"""C: takes a name from its package __init__, which imports... nothing of c."""\n'
                         'from . import A\n__all__ = []\n'}
    modules = read_package(_synthetic(tmp_path, files))
    edges = {(e.importer, e.target) for e in internal_edges(modules)}
    assert ("pkg.low.a", "pkg.low.b") in edges and ("pkg.low.a", "pkg.low") not in edges
    assert ("pkg.low.c", "pkg.low") in edges
    assert check_cycles(modules, internal_edges(modules)) == []
