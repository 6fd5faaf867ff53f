"""How a transfer ends when the file changes under it, or its tries run out.

The task's logic runs in this process (``Transfer().process``), against real
storages, cache and ledger; the worker tests cover the queue around it.
"""

from typing import Any, ClassVar

import pytest
from celery import current_app
from django.core.files.base import ContentFile
from django.test import override_settings

from queued_storage.exceptions import LocalFileMissing
from queued_storage.state import FileState, Status
from queued_storage.tasks import Transfer, TransferAndDelete

pytestmark = pytest.mark.django_db(transaction=True)


class Meddling(Transfer):
    """A transfer that lets the test act on the file while it is in flight."""

    meddle: ClassVar[Any] = None
    result: ClassVar[Any] = True

    def transfer(self, name: str, local: Any, remote: Any, **kwargs: Any) -> Any:
        type(self).meddle(name)
        outcome = type(self).result
        if isinstance(outcome, Exception):
            raise outcome
        if outcome is True:
            return super().transfer(name, local, remote, **kwargs)
        return outcome


@pytest.fixture(params=["ledger", "cache only"])
def storage(request, fs_queued):
    """A delayed pair, with the ledger on and off."""
    with override_settings(QUEUED_STORAGE_LEDGER=request.param == "ledger"):
        yield fs_queued(delayed=True)


def run(storage, name, meddle=lambda name: None, result=True, version=None):
    Meddling.meddle = staticmethod(meddle)
    Meddling.result = result
    version = version or storage.get_state(name).version
    # The instance registered with the Celery app has a request context.
    return current_app.tasks[Meddling.name].process(storage, name, version)


def saved_again(storage):
    def meddle(name):
        state = storage.get_state(name)
        storage.state.record(name, FileState(Status.PENDING, "newer", state.size))

    return meddle


def test_a_second_delivery_of_a_transferred_file_is_done_at_once(storage):
    name = storage.save("twice.txt", ContentFile(b"x"))
    version = storage.get_state(name).version
    assert run(storage, name) is True
    calls = []
    assert run(storage, name, calls.append, version=version) is True
    assert calls == []  # Nothing was copied again.


def test_a_message_for_an_older_version_is_skipped(storage):
    name = storage.save("old.txt", ContentFile(b"x"))
    assert run(storage, name, version="not-the-version") is False
    assert storage.get_state(name).status == Status.PENDING
    assert not storage.remote.exists(name)


def test_a_message_for_a_name_never_saved_is_skipped(storage):
    assert run(storage, "never.txt", version="v") is False
    assert storage.get_state("never.txt") is None


def test_a_file_past_its_delivery_limit_is_failed(storage):
    name = storage.save("limit.txt", ContentFile(b"x"))
    state = storage.get_state(name)
    storage.state.record(name, state.evolve(attempts=100))
    assert run(storage, name) is False
    failed = storage.get_state(name)
    assert failed.status == Status.FAILED
    assert failed.error.startswith("gave up after")
    assert not storage.remote.exists(name)


def test_an_upload_of_a_file_deleted_meanwhile_is_removed(storage):
    name = storage.save("gone.txt", ContentFile(b"x"))
    assert run(storage, name, lambda n: storage.state.forget(n)) is False
    assert not storage.remote.exists(name)
    assert storage.get_state(name).status == Status.DELETED


def test_a_failed_upload_of_a_file_deleted_meanwhile_is_cleaned(storage):
    name = storage.save("half.txt", ContentFile(b"x"))

    def half_upload_then_delete(n):
        storage.remote.save(n, ContentFile(b"part"))
        storage.state.forget(n)

    assert run(storage, name, half_upload_then_delete, OSError("cut")) is False
    assert not storage.remote.exists(name)
    assert storage.get_state(name).status == Status.DELETED


def test_a_failure_of_a_file_saved_again_leaves_the_new_state(storage):
    name = storage.save("again.txt", ContentFile(b"x"))
    with override_settings(QUEUED_STORAGE_RETRIES=0):
        assert run(storage, name, saved_again(storage), result=False) is False
    state = storage.get_state(name)
    assert (state.status, state.version) == (Status.PENDING, "newer")


def test_a_hard_failure_of_a_file_saved_again_leaves_the_new_state(storage):
    name = storage.save("hard.txt", ContentFile(b"x"))
    refused = LocalFileMissing("refused")
    assert run(storage, name, saved_again(storage), refused) is False
    state = storage.get_state(name)
    assert (state.status, state.version, state.error) == (Status.PENDING, "newer", "")


def test_a_retry_of_a_file_saved_again_gives_way(storage):
    name = storage.save("retry.txt", ContentFile(b"x"))
    with override_settings(QUEUED_STORAGE_RETRIES=3):
        assert run(storage, name, saved_again(storage), result=False) is False
    assert storage.get_state(name).version == "newer"


def test_a_retry_is_scheduled_while_tries_are_left(storage):
    name = storage.save("later.txt", ContentFile(b"x"))
    with override_settings(QUEUED_STORAGE_RETRIES=3):
        assert run(storage, name, result=False) is False
    state = storage.get_state(name)
    assert state.status == Status.PENDING
    assert state.error == "the transfer returned False"
    assert state.attempts == 1


def test_backoff_doubles_up_to_the_maximum_with_jitter():
    task = Transfer()
    with override_settings(
        QUEUED_STORAGE_RETRY_DELAY=2, QUEUED_STORAGE_RETRY_BACKOFF_MAX=5
    ):
        for retries, ceiling in ((0, 2), (1, 4), (2, 5), (6, 5)):
            delay = task.backoff(retries)
            assert ceiling / 2 <= delay <= ceiling


def test_transfer_and_delete_removes_the_local_copy_once_remote(storage):
    name = storage.save("moved.txt", ContentFile(b"x"))
    version = storage.get_state(name).version
    assert TransferAndDelete().process(storage, name, version) is True
    assert storage.using_remote(name)
    assert not storage.local.exists(name)
    with storage.open(name) as handle:
        assert handle.read() == b"x"


def test_an_older_upload_landing_last_is_queued_again(tmp_path):
    from queued_storage.backends import QueuedStorage

    fs = "django.core.files.storage.FileSystemStorage"
    storage = QueuedStorage(
        local=fs, remote=fs, delayed=True,
        local_options={"location": str(tmp_path / "l"), "allow_overwrite": True},
        remote_options={"location": str(tmp_path / "r"), "allow_overwrite": True},
    )  # fmt: skip
    name = storage.save("v.txt", ContentFile(b"first"))
    machine = Transfer().machine()
    assert machine.recheck(storage, name) is True  # Not remote: nothing to compare.
    assert run(storage, name) is True
    assert machine.recheck(storage, name) is True  # The remote copy matches.
    version = storage.get_state(name).version
    # An older upload of the same name lands on the remote after this one.
    storage.remote.save(name, ContentFile(b"older!"))
    assert machine.recheck(storage, name) is False
    state = storage.get_state(name)
    assert state.status == Status.PENDING and state.version != version
    with storage.open(name) as handle:  # Served from the local copy again.
        assert handle.read() == b"first"


def test_an_s3_remote_compares_the_md5_of_the_local_copy(tmp_path, unique):
    from queued_storage.backends import QueuedS3Storage
    from queued_storage.transfer import remote_matches

    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path / "l")},
        remote_options={"location": f"etag-{unique}"}, delayed=True,
    )  # fmt: skip
    name = storage.save("same-size.bin", ContentFile(b"abcdef"))
    assert Transfer().process(storage, name, storage.get_state(name).version)
    assert remote_matches(name, storage.local, storage.remote) is True
    with open(storage.local.path(name), "wb") as handle:
        handle.write(b"ghijkl")  # Same size, other bytes.
    assert remote_matches(name, storage.local, storage.remote) is False
    storage.local.delete(name)  # Nothing left to compare with.
    assert remote_matches(name, storage.local, storage.remote) is True


def test_a_redelivered_message_of_a_failed_file_leaves_it_failed(storage):
    name = storage.save("failed.txt", ContentFile(b"x"))
    version = storage.get_state(name).version
    refused = LocalFileMissing("refused")
    assert run(storage, name, result=refused) is False
    assert storage.get_state(name).status == Status.FAILED
    assert run(storage, name, version=version) is False
    state = storage.get_state(name)
    assert (state.status, state.attempts) == (Status.FAILED, 1)
