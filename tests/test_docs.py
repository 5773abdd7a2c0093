"""The documentation builds without a single warning, every code block in it runs, and every public
name of ``probdiff`` has an API entry.

Both builds run Sphinx in a subprocess with ``-W`` (warnings are errors). The doctest builder runs the
``>>>`` blocks of the pages *and* of the docstrings that autodoc pulls in. The Sphinx builds take about a
minute, so they are marked ``slow``; ``.ci/run`` runs them explicitly.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import probdiff

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _sphinx(builder: str, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder, str(DOCS), str(out),
           "-d", str(out / ".doctrees")]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html")
    result = _sphinx("html", out)
    assert result.returncode == 0, f"sphinx-build -W -b html failed:\n{result.stdout}\n{result.stderr}"
    return out


def _inventory(path: Path) -> set[str]:
    """Object names in a Sphinx ``objects.inv`` (version 2: four header lines, then zlib text)."""
    raw = path.read_bytes()
    lines = raw.split(b"\n", 4)
    assert lines[0].startswith(b"# Sphinx inventory version 2"), lines[0]
    body = zlib.decompress(lines[4]).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line.strip()}


def _public_modules() -> list:
    """``probdiff`` and every importable submodule whose dotted name has no ``_``-prefixed part."""
    modules = [probdiff]
    for info in pkgutil.walk_packages(probdiff.__path__, "probdiff."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        modules.append(importlib.import_module(info.name))
    return modules


def _public_names() -> list[tuple[str, ...]]:
    """Every public object — a top-level name of ``probdiff`` or a name in a public module's ``__all__`` —
    as the tuple of dotted paths under which it is reachable in public modules; an API entry under any
    of them documents it (``probdiff.VPSDE`` documents ``probdiff.processes.gaussian.VPSDE``)."""
    modules = _public_modules()
    where: dict[int, set[str]] = {}
    for module in modules:
        for name, obj in vars(module).items():
            if not name.startswith("_") and not inspect.ismodule(obj):
                where.setdefault(id(obj), set()).add(f"{module.__name__}.{name}")
    wanted = {}
    for module in modules:
        names = getattr(module, "__all__", None)
        if names is None:
            names = [n for n in vars(module) if module is probdiff and not n.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or isinstance(obj, str):
                continue
            wanted[id(obj)] = tuple(sorted(where.get(id(obj), {f"{module.__name__}.{name}"}), key=len))
    return sorted(wanted.values())


@pytest.mark.slow
def test_html_builds_without_warnings(html):
    assert (html / "index.html").is_file()
    for page in ("getting_started", "concepts", "declaring_processes", "api", "references"):
        assert (html / f"{page}.html").is_file(), page


@pytest.mark.slow
def test_every_public_name_has_an_api_entry(html):
    documented = _inventory(html / "objects.inv")
    missing = [names[0] for names in _public_names() if not any(name in documented for name in names)]
    assert not missing, f"public names without an API entry in docs/api.rst: {missing}"


@pytest.mark.slow
def test_every_api_reference_in_the_pages_resolves(html):
    """``:class:``/``:func:``/... roles in the pages point at documented objects (Sphinx only warns about
    unresolved references in nitpicky mode, which autodoc's type hints would flood)."""
    documented = _inventory(html / "objects.inv")
    role = re.compile(r":(?:class|func|mod|data|meth|attr):`([^`]+)`")
    broken = []
    for page in sorted(DOCS.glob("*.rst")):
        for target in role.findall(page.read_text()):
            name = (target.split("<", 1)[1].rstrip(">") if "<" in target else target).lstrip("~")
            if name.startswith("probdiff") and name not in documented:
                broken.append(f"{page.name}: {name}")
    assert not broken, f"references to undocumented objects: {broken}"


def test_every_page_cites_its_papers():
    """Each content page carries a References section citing at least one paper of references.rst."""
    skip = {"index.rst", "references.rst", "api.rst", "property_testing.rst"}
    for page in sorted(DOCS.glob("*.rst")):
        if page.name in skip:
            continue
        text = page.read_text()
        assert "\nReferences\n---" in text, f"{page.name} has no References section"
        assert "]_" in text, f"{page.name} cites no paper"


@pytest.mark.slow
def test_doctests_pass(tmp_path):
    result = _sphinx("doctest", tmp_path)
    assert result.returncode == 0, f"sphinx-build -b doctest failed:\n{result.stdout}\n{result.stderr}"
