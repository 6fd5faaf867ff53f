"""Directories of the two storages: telling them from files, and their files.

Storages disagree on what deleting a directory does: ``FileSystemStorage``
removes only an empty one (and raises ``OSError`` otherwise),
``InMemoryStorage`` removes the whole tree, and object stores have no
directories at all, only common prefixes, which ``delete()`` leaves alone.
A queued storage passes ``delete()`` of a directory on to both storages and
then brings the states of the files below it in line with what is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.files.storage import FileSystemStorage, InMemoryStorage

from . import tree

#: Storages whose ``listdir()`` refuses a file, so that a listing that works
#: on a name that exists proves a directory, even an empty one. Object stores
#: list any prefix, so an empty listing there proves nothing.
_LISTDIR_REFUSES_FILES = (FileSystemStorage, InMemoryStorage)


def walk(storage: Any, path: str = "") -> Iterator[str]:
    """Yield the name of every file below *path* in *storage*.

    Symbolic links are not followed (see :func:`queued_storage.tree.walk`):
    a ``loop -> .`` link in a directory being deleted cannot make this
    walk endless, nor reach files outside the storage.
    """
    return tree.walk(storage, path)


def is_directory(storage: Any, name: str) -> bool:
    """Return whether *storage* holds a directory (or a prefix) named *name*."""
    try:
        dirs, files = storage.listdir(name)
    except (OSError, NotImplementedError, ValueError):
        return False
    if dirs or files:
        return True
    return isinstance(storage, _LISTDIR_REFUSES_FILES) and bool(storage.exists(name))


def files_below(storages: tuple[Any, ...], name: str) -> set[str] | None:
    """Return the files below the directory *name* in any of *storages*.

    Return ``None`` when *name* is a directory in none of them.
    """
    found = [storage for storage in storages if is_directory(storage, name)]
    if not found:
        return None
    return {path for storage in found for path in walk(storage, name)}
