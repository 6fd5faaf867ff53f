"""Removing a transferred local copy only if it is still the one uploaded.

Real folders throughout; a concurrent save is played by writing the file
at the moment the copy has been moved aside, and the failures a local disk
rarely gives (no hard links, an error while the copy is compared) are
injected at the one call that would raise them.
"""

from __future__ import annotations

import logging
import os

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage
from django.test import override_settings

from queued_storage import local_copy
from queued_storage.state import Status


@pytest.fixture
def local(tmp_path):
    return FileSystemStorage(location=str(tmp_path / "local"))


class Pathless(Storage):
    """A storage with no paths on disk, as a cloud storage: names only."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def exists(self, name: str) -> bool:
        return name in self.names

    def delete(self, name: str) -> None:
        self.names.discard(name)


def leftovers(local):
    """Return the files moved aside and never removed or put back."""
    return [n for n in os.listdir(local.location) if n.startswith(".qs-deleting-")]


def rewrite(local, name, data):
    """Write *data* into the local copy of *name*, as a save that overwrites."""
    with open(local.path(name), "wb") as handle:
        handle.write(data)


def test_identity_is_none_for_a_storage_without_paths():
    memory = Pathless("mem.txt")
    assert local_copy.identity(memory, "mem.txt") is None


def test_identity_is_none_for_a_missing_copy(local):
    assert local_copy.identity(local, "never-saved.txt") is None


def test_identity_tells_a_rewrite_and_a_replacement_from_the_original(local):
    local.save("v.txt", ContentFile(b"one"))
    first = local_copy.identity(local, "v.txt")
    rewrite(local, "v.txt", b"two, longer")
    rewritten = local_copy.identity(local, "v.txt")
    os.replace(local.path("v.txt"), local.path("v.tmp"))
    local.save("v.txt", ContentFile(b"one"))
    replaced = local_copy.identity(local, "v.txt")
    assert first is not None
    assert len({first, rewritten, replaced}) == 3


def test_an_unchanged_copy_is_deleted_and_nothing_is_left_aside(local):
    local.save("same.txt", ContentFile(b"same"))
    expected = local_copy.identity(local, "same.txt")
    assert local_copy.delete_if_unchanged(local, "same.txt", expected) is True
    assert not local.exists("same.txt")
    assert leftovers(local) == []


def test_a_copy_rewritten_since_its_upload_is_put_back(local):
    local.save("changed.txt", ContentFile(b"uploaded"))
    expected = local_copy.identity(local, "changed.txt")
    rewrite(local, "changed.txt", b"saved again, after the upload")
    assert local_copy.delete_if_unchanged(local, "changed.txt", expected) is False
    with local.open("changed.txt") as handle:
        assert handle.read() == b"saved again, after the upload"
    assert leftovers(local) == []


def test_a_copy_already_gone_counts_as_deleted(local):
    local.save("gone.txt", ContentFile(b"x"))
    expected = local_copy.identity(local, "gone.txt")
    local.delete("gone.txt")
    assert local_copy.delete_if_unchanged(local, "gone.txt", expected) is True
    assert leftovers(local) == []


def test_without_an_identity_the_copy_is_deleted_by_name(local):
    local.save("unknown.txt", ContentFile(b"x"))
    assert local_copy.delete_if_unchanged(local, "unknown.txt", None) is True
    assert not local.exists("unknown.txt")


def test_a_storage_without_paths_deletes_by_name():
    memory = Pathless("mem.txt")
    assert local_copy.delete_if_unchanged(memory, "mem.txt", (1, 2, 3, 4)) is True
    assert not memory.exists("mem.txt")


def save_during_move(monkeypatch, local, name, data):
    """Make a save of *name* land right after its copy is moved aside."""
    move = local_copy.move_aside

    def move_then_save(path, aside):
        move(path, aside)
        local.save(name, ContentFile(data))

    monkeypatch.setattr(local_copy, "move_aside", move_then_save)


def test_a_save_landing_while_an_unchanged_copy_is_aside_keeps_its_bytes(
    local, monkeypatch
):
    local.save("race.txt", ContentFile(b"uploaded"))
    expected = local_copy.identity(local, "race.txt")
    save_during_move(monkeypatch, local, "race.txt", b"newer save")
    assert local_copy.delete_if_unchanged(local, "race.txt", expected) is True
    with local.open("race.txt") as handle:
        assert handle.read() == b"newer save"
    assert leftovers(local) == []


def test_a_changed_copy_does_not_overwrite_a_save_that_landed_meanwhile(
    local, monkeypatch
):
    local.save("both.txt", ContentFile(b"uploaded"))
    expected = local_copy.identity(local, "both.txt")
    rewrite(local, "both.txt", b"rewritten in place")
    save_during_move(monkeypatch, local, "both.txt", b"newest save")
    assert local_copy.delete_if_unchanged(local, "both.txt", expected) is False
    with local.open("both.txt") as handle:
        assert handle.read() == b"newest save"
    assert leftovers(local) == []


def test_without_hard_links_a_changed_copy_is_renamed_back(local, monkeypatch):
    local.save("nolink.txt", ContentFile(b"uploaded"))
    expected = local_copy.identity(local, "nolink.txt")
    rewrite(local, "nolink.txt", b"rewritten")

    def no_links(src, dst, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    # Some file systems (FAT, some network mounts) refuse hard links.
    monkeypatch.setattr(local_copy.os, "link", no_links)
    assert local_copy.delete_if_unchanged(local, "nolink.txt", expected) is False
    with local.open("nolink.txt") as handle:
        assert handle.read() == b"rewritten"
    assert leftovers(local) == []


def test_without_hard_links_a_save_that_landed_meanwhile_is_kept(local, monkeypatch):
    local.save("nolink2.txt", ContentFile(b"uploaded"))
    expected = local_copy.identity(local, "nolink2.txt")
    rewrite(local, "nolink2.txt", b"rewritten")
    save_during_move(monkeypatch, local, "nolink2.txt", b"newest save")

    def no_links(src, dst, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(local_copy.os, "link", no_links)
    assert local_copy.delete_if_unchanged(local, "nolink2.txt", expected) is False
    with local.open("nolink2.txt") as handle:
        assert handle.read() == b"newest save"
    assert leftovers(local) == []


def test_an_error_while_comparing_puts_the_copy_back_and_is_raised(local, monkeypatch):
    local.save("error.txt", ContentFile(b"uploaded"))
    expected = local_copy.identity(local, "error.txt")

    def failing_lock(handle, flags):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(local_copy.locks, "lock", failing_lock)
    with pytest.raises(OSError, match="Input/output error"):
        local_copy.delete_if_unchanged(local, "error.txt", expected)
    with local.open("error.txt") as handle:
        assert handle.read() == b"uploaded"
    assert leftovers(local) == []


# delete_transferred: the file's state decides first ---------------------------


@pytest.fixture
def queued(fs_queued, unique):
    with override_settings(QUEUED_STORAGE_QUEUE=f"local-copy-{unique}"):
        yield fs_queued()


def make_remote(queued, name):
    state = queued.state.get(name, durable=True)
    moved = state.evolve(status=Status.TRANSFERRED)
    assert queued.state.compare_and_set(name, state.version, moved)


@pytest.mark.django_db(transaction=True)
def test_a_transferred_unchanged_copy_is_deleted(queued):
    name = queued.save("done.txt", ContentFile(b"x"))
    expected = local_copy.identity(queued.local, name)
    make_remote(queued, name)
    assert local_copy.delete_transferred(queued, name, expected) is True
    assert not queued.local.exists(name)


@pytest.mark.django_db(transaction=True)
def test_a_copy_not_recorded_as_remote_is_kept_and_logged(queued, caplog):
    name = queued.save("pending.txt", ContentFile(b"x"))
    expected = local_copy.identity(queued.local, name)
    with caplog.at_level(logging.INFO, logger="queued_storage"):
        assert local_copy.delete_transferred(queued, name, expected) is False
    assert queued.local.exists(name)
    kept = [r for r in caplog.records if "Kept the local copy" in r.getMessage()]
    assert [(r.file_name, r.storage) for r in kept] == [(name, queued.reference)]


@pytest.mark.django_db(transaction=True)
def test_a_deleted_file_keeps_whatever_local_copy_is_there(queued):
    name = queued.save("deleted.txt", ContentFile(b"x"))
    expected = local_copy.identity(queued.local, name)
    queued.state.forget(name)
    assert local_copy.delete_transferred(queued, name, expected) is False
    assert queued.local.exists(name)
