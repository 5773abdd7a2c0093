"""Sphinx configuration for the probdiff documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html``; check every code block:
``sphinx-build -W -b doctest docs docs/_build/doctest``. Both run in CI (tests/test_docs.py).
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import probdiff  # noqa: E402

project = "probdiff"
author = "the probdiff authors"
copyright = "2026, the probdiff authors"
release = probdiff.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

# Google-style docstrings (napoleon), signatures kept readable.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields: no duplicate entries for NamedTuple/dataclass fields
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": True}
add_module_names = False

# Every ``>>>`` block in the pages and in the docstrings pulled in by autodoc is a doctest.
doctest_global_setup = """
import torch
import probdiff as pd
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny tensors: one thread avoids oversubscription on shared CI cores
torch.set_default_dtype(torch.float32)
"""
doctest_default_flags = (
    __import__("doctest").ELLIPSIS
    | __import__("doctest").NORMALIZE_WHITESPACE
    | __import__("doctest").IGNORE_EXCEPTION_DETAIL
)

templates_path = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {
    "description": "Declare a forward process; derive the rest.",
    "fixed_sidebar": True,
}
pygments_style = "sphinx"
