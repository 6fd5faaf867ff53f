"""Find a queued storage from the reference a task message carries.

Every queued storage built in a process registers itself here. A worker
resolves a message's reference against the storages its own configuration
built (model fields and ``STORAGES``), never against anything the message
could name, so a forged message can at most ask for a transfer that the
worker's configuration already allows.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils.module_loading import import_string

from .exceptions import UnknownStorage
from .redaction import shorten

if TYPE_CHECKING:
    from .backends import QueuedStorage
    from .base import QueuedStorageBase

# In order of creation: the storages of the project's own models come first,
# before copies such as those of migrations' historical models.
_instances: list[weakref.ref[QueuedStorageBase]] = []


def register(storage: QueuedStorageBase) -> None:
    """Make *storage* findable by its reference in this process."""
    _instances[:] = [ref for ref in _instances if ref() is not None]
    _instances.append(weakref.ref(storage))


def _find(reference: str) -> QueuedStorageBase | None:
    for ref in list(_instances):
        storage = ref()
        if storage is not None and storage.reference == reference:
            return storage
    return None


def queued_aliases() -> list[str]:
    """Return the ``STORAGES`` aliases whose backend is a queued storage."""
    from .base import QueuedStorageBase

    aliases = []
    for alias, params in getattr(settings, "STORAGES", {}).items():
        try:
            backend = import_string(params.get("BACKEND", ""))
        except ImportError:
            continue
        if isinstance(backend, type) and issubclass(backend, QueuedStorageBase):
            aliases.append(alias)
    return aliases


def resolve(reference: str) -> QueuedStorage:
    """Return this process's queued storage known as *reference*.

    Raise :class:`~queued_storage.exceptions.UnknownStorage` when no storage
    of this process's configuration has that reference.
    """
    storage = _find(reference)
    if storage is None:
        # Storages of STORAGES are built on first use: build the queued ones.
        from django.core.files.storage import storages

        for alias in queued_aliases():
            storages[alias]
        storage = _find(reference)
    if storage is None:
        raise UnknownStorage(
            f"No queued storage of this process is known as {shorten(reference)}. "
            "The worker must run with the same settings and models as the web "
            "process that sent the transfer."
        )
    return storage  # type: ignore[return-value]


def instances() -> list[QueuedStorageBase]:
    """Return the queued storages built in this process and still alive."""
    return [storage for ref in list(_instances) if (storage := ref()) is not None]
