"""Sphinx configuration of the django-queued-storage documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import django

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# Import the package from this checkout, with the docs' own tiny settings,
# whatever DJANGO_SETTINGS_MODULE the calling shell may have set.
sys.path[:0] = [str(ROOT), str(DOCS)]
os.environ["DJANGO_SETTINGS_MODULE"] = "_settings"
django.setup()

import queued_storage  # noqa: E402

# -- Project ------------------------------------------------------------------

project = "django-queued-storage"
author = "the django-queued-storage authors"
copyright = "the django-queued-storage authors"
release = queued_storage.__version__
version = ".".join(release.split(".")[:2])

# -- General ------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
exclude_patterns = ["_build", "_settings.py"]
default_role = "literal"
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# No intersphinx: the build must work without a network. Django and Celery
# names are written as literals.

# -- autodoc ------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"

# -- HTML ---------------------------------------------------------------------

html_theme = "furo"
html_title = f"django-queued-storage {release}"
html_show_sourcelink = False

# -- Custom roles and directives ----------------------------------------------

#: The screenshot of the example project, when it has been produced.
EXAMPLE_SCREENSHOT = DOCS / "_static" / "example-page.png"
SCREENSHOT_MARKER = ".. example-page-screenshot"
SCREENSHOT_DIRECTIVE = """\
.. figure:: _static/example-page.png
   :alt: The example's gallery page: an upload form and a table of three
         uploads, marked local, transferring and remote, each with the URL it
         is served from.

   The example's page: one file waits on the local storage, one is being
   copied, one is served from the remote.
"""


def include_screenshot(app, docname, source):
    """Show the example's screenshot where a page asks for it, if it exists."""
    if SCREENSHOT_MARKER in source[0]:
        replacement = SCREENSHOT_DIRECTIVE if EXAMPLE_SCREENSHOT.is_file() else ""
        source[0] = source[0].replace(SCREENSHOT_MARKER, replacement)


def setup(app):
    app.add_crossref_type(
        directivename="setting",
        rolename="setting",
        indextemplate="pair: %s; setting",
    )
    app.connect("source-read", include_screenshot)
