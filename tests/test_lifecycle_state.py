"""A file's state where the application needs it, and the inline transfer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from queued_storage.fields import QueuedFileField, prefetch_states
from queued_storage.models import StoredFile
from queued_storage.state import Status
from queued_storage.tasks import Transfer
from tests.test_performance_paths import redis_round_trips
from tests.testapp.models import Album, Plain, fs_storage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_broker() -> Any:
    """Saves leave their message to the dispatcher: nothing reaches a worker."""
    with override_settings(
        QUEUED_STORAGE_OUTBOX=True, QUEUED_STORAGE_WORKER_DISPATCH=False
    ):
        yield


def make_plain(unique: str, text: str = "x") -> Plain:
    obj = Plain()
    obj.file.save(f"{unique}.txt", ContentFile(text.encode()))
    return Plain.objects.get(pk=obj.pk)


def test_field_file_shows_pending_then_transferred_state(unique):
    obj = make_plain(unique)
    assert obj.file.status == Status.PENDING
    assert obj.file.is_transferred is False
    assert obj.file.transferred_at is None
    outcome = obj.file.transfer(now=True)
    assert outcome.status == Status.TRANSFERRED
    fresh = Plain.objects.get(pk=obj.pk)
    assert fresh.file.status == Status.TRANSFERRED
    assert fresh.file.is_transferred is True
    assert fresh.file.transferred_at == outcome.transferred_at is not None
    assert fresh.file.url.startswith("/remote/")


def test_reading_the_status_is_one_cache_round_trip_and_no_query(unique):
    obj = make_plain(unique)
    with redis_round_trips() as trips, CaptureQueriesContext(connection) as queries:
        assert obj.file.status == Status.PENDING
    assert (trips[0], len(queries)) == (1, 0)


def test_transfer_time_survives_a_flushed_cache(unique):
    obj = make_plain(unique)
    done = obj.file.transfer(now=True)
    fs_storage.state.cache.delete(fs_storage.state.key(obj.file.name))
    assert Plain.objects.get(pk=obj.pk).file.transferred_at == done.transferred_at


def test_prefetch_reads_every_state_of_a_list_in_one_round_trip(unique):
    objs = [make_plain(f"{unique}-{i}") for i in range(6)]
    objs[0].file.transfer(now=True)
    album = Album()
    album.cover.save(f"{unique}-cover.txt", ContentFile(b"c"), save=False)
    album.back.save(f"{unique}-back.txt", ContentFile(b"b"))
    pks = [obj.pk for obj in objs]
    with redis_round_trips() as trips, CaptureQueriesContext(connection) as queries:
        found = prefetch_states(Plain.objects.filter(pk__in=pks).order_by("pk"))
        pages = [(o.file.status, o.file.url, o.file.is_transferred) for o in found]
    assert trips[0] == 1
    assert len(queries) == 1  # The list itself; the cache held every state.
    assert pages[0] == (Status.TRANSFERRED, f"/remote/{objs[0].file.name}", True)
    assert all(page[0] == Status.PENDING for page in pages[1:])
    assert all(page[1].startswith("/local/") for page in pages[1:])
    with redis_round_trips() as trips:
        (loaded,) = prefetch_states(Album.objects.filter(pk=album.pk))
        assert loaded.cover.status == Status.PENDING
    # The plain FileField of the same storage shares the one round trip.
    assert trips[0] == 1
    assert not hasattr(loaded.back, "status")


def test_prefetch_reads_the_ledger_once_for_states_the_cache_lost(unique):
    objs = [make_plain(f"{unique}-{i}") for i in range(4)]
    fs_storage.state.cache.delete_many(
        [fs_storage.state.key(obj.file.name) for obj in objs]
    )
    with CaptureQueriesContext(connection) as queries:
        found = prefetch_states(objs)
        statuses = {obj.file.status for obj in found}
    assert statuses == {Status.PENDING}
    assert len(queries) == 1


def test_a_prefetched_state_is_dropped_when_the_file_changes(unique):
    (obj,) = prefetch_states([make_plain(unique)])
    assert obj.file.status == Status.PENDING
    obj.file.transfer(now=True)
    assert obj.file.status == Status.TRANSFERRED
    obj.file.save(f"{unique}-again.txt", ContentFile(b"y"))
    assert obj.file.status == Status.PENDING


def test_inline_transfer_of_a_missing_local_copy_returns_the_failure(unique):
    obj = make_plain(unique)
    fs_storage.local.delete(obj.file.name)
    outcome = obj.file.transfer(now=True)
    assert outcome.status == Status.FAILED
    assert "LocalFileMissing" in outcome.error
    assert obj.file.status == Status.FAILED


class AlwaysLater(Transfer):
    """A transfer that asks, each time, to be tried again later."""

    name = "tests.test_lifecycle_state.AlwaysLater"

    def transfer(self, name: str, local: Any, remote: Any, **kwargs: Any) -> bool:
        return False


def test_inline_transfer_makes_one_attempt_and_fails_at_once(fs_queued):
    storage = fs_queued(task=AlwaysLater.name)
    name = storage.save("later.txt", ContentFile(b"x"))
    outcome = storage.transfer(name, now=True)
    assert outcome.status == Status.FAILED
    assert outcome.attempts == 1
    assert "returned False" in outcome.error


def test_inline_transfer_does_not_wait_for_a_scheduled_retry(fs_queued):
    storage = fs_queued()
    name = storage.save("due-later.txt", ContentFile(b"x"))
    rows = StoredFile.objects.filter(storage=storage.reference, name=name)
    rows.update(next_attempt=timezone.now() + timedelta(hours=1))
    assert storage.transfer(name, now=True).status == Status.TRANSFERRED


def test_inline_transfer_of_a_transferred_file_does_nothing(unique):
    obj = make_plain(unique)
    first = obj.file.transfer(now=True)
    assert obj.file.transfer(now=True) == first


def test_a_file_of_a_plain_storage_has_no_state():
    field = QueuedFileField(storage=storages["default"])
    field.set_attributes_from_name("f")
    file = field.attr_class(Plain(), field, "a.txt")
    with pytest.raises(TypeError, match="not a queued storage"):
        file.status


def test_inline_transfer_leaves_a_file_with_a_live_lease_to_its_worker(fs_queued):
    storage = fs_queued()
    name = storage.save("leased.txt", ContentFile(b"x"))
    rows = StoredFile.objects.filter(storage=storage.reference, name=name)
    rows.update(
        status=Status.TRANSFERRING, attempts=1, lease_owner="another-worker",
        lease_expires=timezone.now() + timedelta(hours=1),
    )  # fmt: skip
    outcome = storage.transfer(name, now=True)
    assert (outcome.status, outcome.attempts) == (Status.TRANSFERRING, 1)
    assert not storage.remote.exists(name)
    assert rows.get().lease_owner == "another-worker"
