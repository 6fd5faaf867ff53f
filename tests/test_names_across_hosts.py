"""Two hosts never hand out, or take over, each other's live file names.

Each "host" is a queued storage with a local folder of its own; the two share
the remote folder, the cache, the ledger and the storage reference, as two
web servers with per-host disks do.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.test import override_settings

import queued_storage.state as state_module
from queued_storage.backends import QueuedStorage
from queued_storage.exceptions import NameTaken
from queued_storage.models import StoredFile
from queued_storage.state import FileState, Status
from queued_storage.tasks import Transfer

pytestmark = pytest.mark.django_db

HOOKED = "tests.test_names_across_hosts.HookedFileSystemStorage"


class HookedFileSystemStorage(FileSystemStorage):
    """A local storage that runs ``before_write(name)`` before each write.

    It lets a test run another host's whole save between this host's name
    check and its ledger write, deterministically.
    """

    before_write: Callable[[str], Any] | None = None

    def _save(self, name: str, content: Any) -> str:
        if self.before_write is not None:
            self.before_write(name)
        return super()._save(name, content)


@pytest.fixture(params=["remote", "state"])
def mode(request):
    with override_settings(QUEUED_STORAGE_NAME_CHECK=request.param):
        yield request.param


@pytest.fixture
def hosts(tmp_path, unique):
    """Return two queued storages, hosts A and B, sharing all but the local disk."""

    def host(label: str, delayed: bool = True, **local_options: Any) -> QueuedStorage:
        return QueuedStorage(
            local=HOOKED,
            remote="django.core.files.storage.FileSystemStorage",
            local_options={"location": str(tmp_path / label), **local_options},
            remote_options={"location": str(tmp_path / "remote")},
            reference=f"hosts-{unique}",
            delayed=delayed,
        )

    return host


def rows(storage: QueuedStorage) -> dict[str, str]:
    found = StoredFile.objects.filter(storage=storage.reference)
    return dict(found.values_list("name", "version"))


def read(storage: Any, name: str) -> bytes:
    with storage.open(name) as handle:
        return bytes(handle.read())


def put_in_status(storage: QueuedStorage, name: str, status: str) -> None:
    """Move *name*, saved and pending, on to *status* as a worker would."""
    state = storage.get_state(name)
    if status == Status.TRANSFERRED:
        assert Transfer().process(storage, name, state.version)
    elif status != Status.PENDING:
        moved = state.evolve(status=status)
        assert storage.state.compare_and_set(name, state.version, moved)
    assert storage.get_state(name).status == status


@pytest.mark.parametrize(
    "status",
    [Status.PENDING, Status.TRANSFERRING, Status.FAILED, Status.TRANSFERRED],
)
def test_second_host_never_gets_a_live_name(mode, hosts, status):
    a, b = hosts("a"), hosts("b")
    first = a.save("photo.jpg", ContentFile(b"first user"))
    put_in_status(a, first, status)
    owner = a.get_state(first)

    assert b.get_available_name("photo.jpg") != "photo.jpg"
    second = b.save("photo.jpg", ContentFile(b"second user"))

    assert second != first
    assert a.get_state(first) == owner
    assert rows(a)[first] == owner.version
    assert read(a, first) == b"first user"
    assert read(b, second) == b"second user"


def test_second_host_never_gets_a_live_name_known_to_the_cache_only(mode, hosts):
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        a, b = hosts("a"), hosts("b")
        first = a.save("photo.jpg", ContentFile(b"first user"))
        assert b.get_available_name("photo.jpg") != "photo.jpg"
        second = b.save("photo.jpg", ContentFile(b"second user"))
    assert second != first


@pytest.mark.parametrize("outbox", [False, True], ids=["send", "outbox"])
def test_second_host_never_gets_a_live_name_when_both_pass_the_name_check(
    mode, hosts, ledger_path, outbox
):
    """Both hosts find the name free; A saves whole before B writes the ledger."""
    # With the outbox, saves leave their messages to the dispatcher: none is sent.
    a, b = hosts("a", delayed=not outbox), hosts("b", delayed=not outbox)
    saved_by_a: list[str] = []

    def host_a_saves_meanwhile(name: str) -> None:
        b.local.before_write = None
        saved_by_a.append(a.save(name, ContentFile(b"first user")))

    b.local.before_write = host_a_saves_meanwhile
    with override_settings(QUEUED_STORAGE_OUTBOX=outbox):
        second = b.save("photo.jpg", ContentFile(b"second user"))

    assert saved_by_a == ["photo.jpg"]
    assert second != "photo.jpg"
    versions = rows(a)
    assert versions["photo.jpg"] == a.get_state("photo.jpg").version
    assert versions[second] == b.get_state(second).version
    # B's bytes moved to its new name: nothing stays under the taken one.
    assert not b.local.exists("photo.jpg")
    assert read(b.local, second) == b"second user"
    if outbox:  # The dispatcher sends one message per file, each its own.
        pending = StoredFile.objects.filter(storage=a.reference, outbox=True)
        assert set(pending.values_list("name", flat=True)) == {"photo.jpg", second}
    # Both transfers go ahead, each with its own bytes.
    for host, name in ((a, "photo.jpg"), (b, second)):
        assert Transfer().process(host, name, host.get_state(name).version)
    assert read(a.remote, "photo.jpg") == b"first user"
    assert read(a.remote, second) == b"second user"


def test_second_host_race_fails_cleanly_when_every_name_is_taken(
    mode, hosts, monkeypatch
):
    """A host that loses the race for every name it tries keeps nothing.

    Its file system has no hard links, so each move to another name is a
    write that the other host's save can come before.
    """

    def no_links(source: str, target: str) -> None:
        raise OSError(errno.EPERM, "no hard links on this file system")

    monkeypatch.setattr(os, "link", no_links)
    a, b = hosts("a"), hosts("b")
    taken: list[str] = []

    def host_a_takes_it_first(name: str) -> None:
        taken.append(a.save(name, ContentFile(b"first user")))

    b.local.before_write = host_a_takes_it_first
    with pytest.raises(NameTaken):
        b.save("photo.jpg", ContentFile(b"second user"))

    assert len(taken) == len(set(taken)) > 1
    assert b.local.listdir("")[1] == []
    assert set(rows(a)) == set(taken)
    assert all(a.get_state(name).status == Status.PENDING for name in taken)


def test_overwriting_local_storage_replaces_the_file_by_design(mode, hosts):
    """A local storage that overwrites (allow_overwrite) keeps the name."""
    a = hosts("a", allow_overwrite=True)
    b = hosts("b", allow_overwrite=True)
    first = a.save("photo.jpg", ContentFile(b"first"))
    second = b.save("photo.jpg", ContentFile(b"second"))
    assert first == second == "photo.jpg"
    assert rows(a)["photo.jpg"] == b.get_state("photo.jpg").version


@pytest.fixture(params=["sql", "orm"])
def ledger_path(request, monkeypatch):
    if request.param == "orm":
        monkeypatch.setattr(state_module, "statements", lambda alias: None)
    return request.param


@pytest.mark.parametrize(
    "status",
    [Status.PENDING, Status.TRANSFERRING, Status.FAILED, Status.TRANSFERRED],
)
def test_exclusive_ledger_write_refuses_a_live_row_of_another_version(
    hosts, ledger_path, status
):
    store = hosts("a").state
    store.record("x.txt", FileState(status, "first"))
    assert not store.record(
        "x.txt", FileState(Status.PENDING, "second"), exclusive=True
    )
    assert store.get("x.txt").version == "first"
    assert rows(hosts("a")) == {"x.txt": "first"}


def test_exclusive_ledger_write_takes_the_name_of_a_deleted_file(hosts, ledger_path):
    store = hosts("a").state
    store.record("x.txt", FileState(Status.PENDING, "first"))
    store.forget("x.txt")
    assert store.record("x.txt", FileState(Status.PENDING, "second"), exclusive=True)
    assert store.get("x.txt").version == "second"
    assert store.record("y.txt", FileState(Status.PENDING, "new"), exclusive=True)
    assert rows(hosts("a")) == {"x.txt": "second", "y.txt": "new"}


def test_save_with_the_remote_check_costs_one_insert(hosts):
    """The live-name guard adds no statement: the claim itself checks the name."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    a = hosts("a")
    with override_settings(QUEUED_STORAGE_NAME_CHECK="remote"):
        with CaptureQueriesContext(connection) as queries:
            a.save("counted.txt", ContentFile(b"x"))
    kinds = [query["sql"].split(None, 1)[0].upper() for query in queries]
    assert kinds == ["INSERT"]


def test_a_save_that_lost_its_name_moves_its_copy_without_copying_it(tmp_path, unique):
    """The local copy gets its new name by a hard link: no byte is written again.

    Only on Django's own ``FileSystemStorage._save()``: a subclass that
    overrides it is written through it (the hooked disk of the other tests).
    """

    def host(label: str) -> QueuedStorage:
        return QueuedStorage(
            local="django.core.files.storage.FileSystemStorage",
            remote="django.core.files.storage.FileSystemStorage",
            local_options={"location": str(tmp_path / label)},
            remote_options={"location": str(tmp_path / "remote")},
            reference=f"hosts-{unique}",
            delayed=True,
        )

    a, b = host("a"), host("b")
    a.save("big.bin", ContentFile(b"first"))
    inodes: list[int] = []
    original = b._linked

    def watched(name: str, new: str) -> bool:
        inodes.append(os.stat(b.local.path(name)).st_ino)
        return original(name, new)

    b._linked = watched
    second = b.save("big.bin", ContentFile(b"second"))
    assert second != "big.bin"
    assert inodes == [os.stat(b.local.path(second)).st_ino]
    assert not b.local.exists("big.bin")
    assert read(b.local, second) == b"second"
