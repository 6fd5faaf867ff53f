"""The helper module of 0.8, kept for imports; use Django's ``import_string``."""

from __future__ import annotations

import warnings
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string


def import_attribute(import_path: str | None = None, options: Any = None) -> Any:
    """Return the object that the dotted *import_path* names.

    Raise ``ImproperlyConfigured`` when it cannot be imported, as 0.8 did.
    *options* is accepted and ignored, as it was.
    """
    warnings.warn(
        "queued_storage.utils.import_attribute is deprecated and will be removed "
        "in 2.0; use django.utils.module_loading.import_string.",
        DeprecationWarning,
        stacklevel=2,
    )
    if not import_path:
        raise ImproperlyConfigured("No import path was given.")
    try:
        return import_string(import_path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"Cannot import {import_path!r}: {exc}") from exc
