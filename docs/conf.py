"""Sphinx configuration of gaussmix's site: ``make docs`` builds it into docs/_build/html.

No network at build time: cross-references to NumPy, NumPyro, ArviZ, scikit-learn and
JAX resolve through small inventories written at build time into ``docs/_build/_inventories``
by ``docs/_ext/gaussmix_inventories.py`` (names checked against the installed packages),
never downloaded.
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

from gaussmix_inventories import uninstalled_packages, write_inventories  # noqa: E402

import gaussmix  # noqa: E402

project = "gaussmix"
author = "gaussmix developers"
copyright = "gaussmix developers"
release = version = gaussmix.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_parser",
    "gaussmix_cli_help",
    "gaussmix_gallery",
    "gaussmix_references",
]

# Every cross-reference must resolve: a reference to a gaussmix name that does not exist
# (a typo, a renamed or removed name) fails the build (-W). References to gaussmix
# modules and to names reached through another import path resolve through
# docs/_ext/gaussmix_references.py; external names through the local inventories below.
nitpicky = True

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "gallery/*.png", "README.md"]
root_doc = "index"

# MyST: ```{directive} blocks, $ math, anchors for the guides' headings.
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# autodoc + napoleon: the docstrings are Google style with ``.. math::``.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" as a field list: a NamedTuple's fields are also autodoc members, and two
# descriptions of one attribute would be a duplicate-object warning.
napoleon_use_ivar = True

# Local inventories only (see the module docstring), written into docs/_build.
intersphinx_mapping = write_inventories(DOCS / "_build" / "_inventories")
# A listed project whose package is not installed (an optional one: scikit-learn, lmfit)
# has no inventory: its names stay plain text instead of failing the nitpicky build.
# Only those packages' names are ignored; gaussmix's never are.
nitpick_ignore_regex = [(r"py:.*", rf"{top}(\..*)?") for top in uninstalled_packages()]

# The gallery: every examples/*.py, run in its --quick mode (see gaussmix_gallery).
gaussmix_gallery_examples = str(ROOT / "examples")
gaussmix_gallery_output = "gallery_examples"

html_theme = "pydata_sphinx_theme"
html_title = f"gaussmix {version}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False
# Offline: no Google fonts, no analytics; MathJax is loaded from its CDN by the page only.
os.environ.setdefault("MPLBACKEND", "Agg")
