"""Walk the files of a local storage without ever leaving it.

``import`` uploads what this walk yields and ``reconcile --untracked`` lists
it, so whoever can write into the local folder must not be able to make it
read elsewhere: symbolic links (to files, to folders, ``loop -> .``) are
never followed, only regular files are yielded, a folder that cannot be
read is reported and the walk goes on, and a name that the storage would
refuse is reported instead of yielded. The walk is lazy: it holds one
folder's listing and the folders still to visit, never the list of files.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterator

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage, Storage

#: Told of every entry the walk leaves out: its name and why.
Skipped = Callable[[str, str], None]


def _ignore(name: str, reason: str) -> None:
    """Leave out an entry without telling anyone."""


def walk(
    storage: Storage,
    path: str = "",
    *,
    validate: Callable[[str], str] | None = None,
    skipped: Skipped | None = None,
) -> Iterator[str]:
    """Yield the name of every regular file below *path* in *storage*.

    *validate* (a storage's ``validate_name()``) returns the form a name is
    stored under or raises; a name it refuses, or returns in another form,
    is passed to *skipped* with the reason instead of being yielded, as are
    symbolic links, special files and folders that cannot be listed.
    """
    tell = skipped or _ignore
    if isinstance(storage, FileSystemStorage):
        names = _walk_folder(str(storage.location), path, tell)
    else:
        names = _walk_listdir(storage, path, tell)
    for name in names:
        if validate is not None:
            try:
                checked = validate(name)
            except SuspiciousFileOperation as exc:
                tell(name, str(exc))
                continue
            if checked != name:
                tell(name, f"not in Unicode NFC form; rename it to {checked!r}")
                continue
        yield name


def _walk_folder(root: str, path: str, tell: Skipped) -> Iterator[str]:
    """Yield the files below *path* of the folder *root*, following no link."""
    pending = [path]
    while pending:
        folder = pending.pop()
        try:
            # The root itself may be a link (an operator's choice); nothing
            # below it is followed.
            with os.scandir(os.path.join(root, folder) if folder else root) as it:
                for entry in it:
                    name = posixpath.join(folder, entry.name) if folder else entry.name
                    try:
                        if entry.is_symlink():
                            tell(name, "a symbolic link, not followed")
                        elif entry.is_dir(follow_symlinks=False):
                            pending.append(name)
                        elif entry.is_file(follow_symlinks=False):
                            yield name
                        else:
                            tell(name, "not a regular file")
                    except OSError as exc:
                        tell(name, f"cannot be examined: {exc.strerror or exc}")
        except FileNotFoundError:
            if folder:
                tell(folder, "disappeared during the walk")
        except OSError as exc:
            tell(folder or ".", f"cannot be listed: {exc.strerror or exc}")


def _walk_listdir(storage: Storage, path: str, tell: Skipped) -> Iterator[str]:
    """Yield the files below *path* of any other storage, through ``listdir()``."""
    pending = [path]
    while pending:
        folder = pending.pop()
        try:
            dirs, files = storage.listdir(folder)
        except FileNotFoundError:
            continue
        except Exception as exc:
            tell(folder or ".", f"cannot be listed: {type(exc).__name__}")
            continue
        for name in files:
            yield posixpath.join(folder, name) if folder else name
        pending.extend(posixpath.join(folder, d) if folder else d for d in dirs)
