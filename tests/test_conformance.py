"""Every public Storage method of a queued storage, in every state of a file.

A queued storage must answer as the storage that serves the file answers
alone: the local one until the file is transferred, the remote one after,
and, once the file is deleted, as a storage that never held it. Each test
puts one file in one state with one kind of remote, then asks the queued
storage and the wrapped storage the same questions and compares the
answers, exceptions included.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.test import override_settings

from queued_storage.backends import QueuedStorage
from queued_storage.exceptions import RemoteConflict
from queued_storage.state import Status
from queued_storage.tasks import Transfer

FS = "django.core.files.storage.FileSystemStorage"
REMOTES = {
    "filesystem": FS,
    "memory": "django.core.files.storage.InMemoryStorage",
    "s3": "storages.backends.s3.S3Storage",
}
STATES = ["pending", "delayed", "transferring", "transferred", "failed", "deleted"]
BODY = "conformance: h\u00e9llo w\u00f6rld\n".encode()
TIME_METHODS = ("get_accessed_time", "get_created_time", "get_modified_time")

# The ledger is written inside the test's transaction; nothing here needs a
# commit, since no message is sent (delayed storages, or the outbox).
pytestmark = pytest.mark.django_db


class Refused(Transfer):
    """A transfer that the remote refuses for good."""

    def transfer(self, name: str, local: Any, remote: Any, **kwargs: Any) -> bool:
        raise RemoteConflict(f"{name!r} refused by the test remote.")


def outcome(call: Any, *args: Any) -> tuple[str, Any]:
    """Return what *call* answers: its value, or the class of its error."""
    try:
        value = call(*args)
    except Exception as exc:
        return ("raises", _family(exc))
    return ("returns", value)


def _family(exc: Exception) -> type[Exception]:
    # Storages differ in which OSError subclass a missing file raises.
    if isinstance(exc, FileNotFoundError):
        return FileNotFoundError
    return type(exc)


def read(storage: Any, name: str) -> bytes:
    with storage.open(name, "rb") as handle:
        return bytes(handle.read())


@pytest.fixture(params=sorted(REMOTES))
def remote_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(tmp_path: Any, unique: str, remote_kind: str) -> Any:
    def build(delayed: bool) -> QueuedStorage:
        remote_options = {
            "filesystem": {"location": str(tmp_path / "remote"), "base_url": "/r/"},
            "memory": {"location": str(tmp_path / "memory"), "base_url": "/m/"},
            "s3": {"location": f"conformance-{unique}"},
        }[remote_kind]
        return QueuedStorage(
            local=FS,
            remote=REMOTES[remote_kind],
            local_options={"location": str(tmp_path / "local"), "base_url": "/l/"},
            remote_options=remote_options,
            delayed=delayed,
        )

    return build


def put_in_state(make: Any, state: str) -> tuple[QueuedStorage, str]:
    """Save one file and take it to *state* the way the code does."""
    with override_settings(QUEUED_STORAGE_OUTBOX=state == "pending"):
        # The outbox keeps a pending file pending: no message is sent.
        storage = make(delayed=state != "pending")
        # Text: its size in characters is not its size in bytes.
        name = storage.save(f"dir/{state}.txt", ContentFile(BODY.decode()))
    version = storage.get_state(name).version
    if state == "transferring":
        current = storage.get_state(name)
        assert storage.state.compare_and_set(
            name, version, current.evolve(status=Status.TRANSFERRING, attempts=1),
            only_from=(Status.PENDING,),
        )  # fmt: skip
    elif state == "transferred":
        assert Transfer().process(storage, name, version) is True
    elif state == "failed":
        assert Refused().process(storage, name, version) is False
    elif state == "deleted":
        storage.delete(name)
    expected = {"delayed": Status.PENDING}.get(state, state)
    assert storage.get_state(name).status == expected
    return storage, name


def serving(storage: QueuedStorage, state: str) -> Any:
    return storage.remote if state == "transferred" else storage.local


def check_reads(storage: QueuedStorage, name: str, state: str) -> None:
    """Reads answer as the serving storage alone answers."""
    alone = serving(storage, state)
    assert storage.exists(name) is alone.exists(name) is (state != "deleted")
    assert outcome(read, storage, name) == outcome(read, alone, name)
    if state != "deleted":
        assert read(storage, name) == BODY
    assert outcome(storage.size, name) == outcome(alone.size, name)
    assert outcome(storage.url, name) == outcome(alone.url, name)
    assert outcome(storage.path, name) == outcome(alone.path, name)
    for method in TIME_METHODS:
        assert outcome(getattr(storage, method), name) == outcome(
            getattr(alone, method), name
        ), method


def check_sizes(storage: QueuedStorage, name: str, state: str) -> None:
    """Sizes are the stored bytes, before and after the transfer."""
    if state == "deleted":
        assert outcome(storage.size, name)[0] == "raises"
        return
    assert storage.size(name) == len(BODY)
    assert storage.get_state(name).size == len(BODY)


def check_listdir(storage: QueuedStorage, name: str, state: str) -> None:
    """A listing is the union of both storages' listings."""
    dirs: set[str] = set()
    files: set[str] = set()
    for alone in (storage.local, storage.remote):
        try:
            found = alone.listdir("dir")
        except FileNotFoundError:
            continue
        dirs.update(found[0])
        files.update(found[1])
    listed = storage.listdir("dir")
    assert (set(listed[0]), set(listed[1])) == (dirs, files)
    assert (f"{state}.txt" in listed[1]) is (state != "deleted")


def check_names(storage: QueuedStorage, name: str, state: str) -> None:
    """A name is free exactly when no storage holds the file."""
    held = storage.local.exists(name) or storage.remote.exists(name)
    available = storage.get_available_name(name)
    assert (available == name) is (not held)
    assert (available == name) is (
        serving(storage, state).get_available_name(name) == name
    )
    assert storage.generate_filename(name) == storage.local.generate_filename(name)
    assert storage.get_valid_name("a b.txt") == storage.local.get_valid_name("a b.txt")
    again = storage.save(name, ContentFile(b"second"))
    assert (again == name) is (not held)
    assert read(storage, again) == b"second"
    if again != name and state != "deleted":
        assert read(storage, name) == BODY


def check_delete(storage: QueuedStorage, name: str, state: str) -> None:
    """Deleting leaves nothing, in whatever state the file was."""
    storage.delete(name)
    assert not storage.exists(name)
    assert not storage.local.exists(name)
    assert not storage.remote.exists(name)
    assert outcome(read, storage, name) == outcome(read, storage.local, name)
    assert outcome(read, storage, name)[0] == "raises"
    assert storage.get_state(name).status == Status.DELETED
    storage.delete(name)  # Deleting again is no error, as for the storages.
    assert storage.get_available_name(name) == name


@pytest.mark.parametrize("state", STATES)
def test_every_storage_method_answers_as_the_wrapped_storage(
    make: Any, state: str
) -> None:
    storage, name = put_in_state(make, state)
    # In this order: the later checks save and delete.
    for check in (check_reads, check_sizes, check_listdir, check_names, check_delete):
        check(storage, name, state)
