"""The documentation builds without a single warning, every code block in it runs, and every public
name of ``probdiff`` has an API entry.

Both builds run Sphinx in a subprocess with ``-W`` (warnings are errors). The doctest builder runs the
``>>>`` blocks of the pages *and* of the docstrings that autodoc pulls in. The Sphinx builds take about a
minute, so they are marked ``slow``; ``.ci/run`` runs them explicitly.
"""

from __future__ import annotations

import inspect
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


def _public_names() -> list[tuple[str, ...]]:
    """Every public object, as the tuple of names under which an API entry counts: ``probdiff.<name>``
    for a top-level object; ``probdiff.<mod>.<name>`` for a name in a public subpackage's ``__all__``, or
    ``probdiff.<name>`` when the same object is re-exported at the top level."""
    names = set()
    for name, obj in vars(probdiff).items():
        if name.startswith("_"):
            continue
        if inspect.ismodule(obj):
            if not obj.__name__.startswith("probdiff."):
                continue
            for member in getattr(obj, "__all__", []):
                alias = getattr(probdiff, member, None)
                same = alias is not None and alias is getattr(obj, member)
                names.add((f"{obj.__name__}.{member}",) + ((f"probdiff.{member}",) if same else ()))
        else:
            names.add((f"probdiff.{name}",))
    return sorted(names)


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
