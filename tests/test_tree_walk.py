"""The walk of a local storage's files, on folders that change under it and
on storages that can only be listed through ``listdir()``.

The hostile trees (links, FIFOs, unlistable folders) are in
``tests/test_hostile_tree.py``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, InMemoryStorage

from queued_storage import tree


def walked(storage: Any, path: str = "") -> tuple[list[str], list[tuple[str, str]]]:
    skipped: list[tuple[str, str]] = []
    names = sorted(
        tree.walk(storage, path, skipped=lambda n, r: skipped.append((n, r)))
    )
    return names, skipped


def fill(storage: Any, *names: str) -> None:
    for name in names:
        storage.save(name, ContentFile(b"x"))


def test_a_storage_without_a_folder_is_walked_through_listdir():
    storage = InMemoryStorage()
    fill(storage, "top.txt", "a/one.txt", "a/b/two.txt", "c/three.txt")
    assert walked(storage) == (
        ["a/b/two.txt", "a/one.txt", "c/three.txt", "top.txt"], [],
    )  # fmt: skip
    assert walked(storage, "a") == (["a/b/two.txt", "a/one.txt"], [])


def test_listing_a_missing_folder_yields_nothing_and_tells_nothing():
    storage = InMemoryStorage()
    fill(storage, "here.txt")
    assert walked(storage, "not-there") == ([], [])


class Refusing(InMemoryStorage):
    """A storage that refuses to list one folder, as a remote's permissions."""

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        if path == "secret":
            raise PermissionError("access denied to secret/ for this key")
        return super().listdir(path)


def test_a_folder_that_cannot_be_listed_is_told_and_the_walk_goes_on():
    storage = Refusing()
    fill(storage, "secret/hidden.txt", "open/seen.txt")
    names, skipped = walked(storage)
    assert names == ["open/seen.txt"]
    # The type of the error only: its text may hold a remote's details.
    assert skipped == [("secret", "cannot be listed: PermissionError")]


def test_validation_applies_to_names_found_through_listdir():
    storage = InMemoryStorage()
    fill(storage, "fine.txt", "refused.txt")

    def validate(name: str) -> str:
        from django.core.exceptions import SuspiciousFileOperation

        if name == "refused.txt":
            raise SuspiciousFileOperation("not allowed here")
        return name

    skipped: list[tuple[str, str]] = []
    names = list(
        tree.walk(storage, validate=validate, skipped=lambda *s: skipped.append(s))
    )
    assert (names, skipped) == (["fine.txt"], [("refused.txt", "not allowed here")])


def test_a_folder_removed_during_the_walk_is_told_and_the_walk_finishes(tmp_path):
    storage = FileSystemStorage(location=str(tmp_path))
    fill(storage, "first.txt", "gone/inside.txt", "kept/inside.txt")
    skipped: list[tuple[str, str]] = []
    walk = tree.walk(storage, skipped=lambda *s: skipped.append(s))
    assert next(walk) == "first.txt"  # The root is listed; its folders wait.
    shutil.rmtree(tmp_path / "gone")
    assert list(walk) == ["kept/inside.txt"]
    assert skipped == [("gone", "disappeared during the walk")]


def test_a_missing_root_yields_nothing_and_tells_nothing(tmp_path):
    storage = FileSystemStorage(location=str(tmp_path / "never-made"))
    assert walked(storage) == ([], [])


class Unexaminable:
    """A folder entry whose type cannot be read, as on a failing disk."""

    def __init__(self, entry: os.DirEntry[str]) -> None:
        self.name = entry.name

    def is_symlink(self) -> bool:
        raise OSError(5, "Input/output error")


def test_an_entry_that_cannot_be_examined_is_told_and_the_walk_goes_on(
    tmp_path, monkeypatch
):
    storage = FileSystemStorage(location=str(tmp_path))
    fill(storage, "bad.txt", "good.txt")
    scandir = os.scandir

    class Listing:
        def __init__(self, path: str) -> None:
            self.inner = scandir(path)

        def __enter__(self) -> Any:
            with self.inner as entries:
                listed = list(entries)
            return [Unexaminable(e) if e.name == "bad.txt" else e for e in listed]

        def __exit__(self, *exc: Any) -> None:
            pass

    def only_here(path: str) -> Any:
        # os is shared: other threads' listings go on untouched.
        return Listing(path) if str(path) == str(tmp_path) else scandir(path)

    monkeypatch.setattr(tree.os, "scandir", only_here)
    names, skipped = walked(storage)
    monkeypatch.undo()
    assert names == ["good.txt"]
    assert skipped == [("bad.txt", "cannot be examined: Input/output error")]
