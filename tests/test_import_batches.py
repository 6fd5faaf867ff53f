"""The import records what its threads moved a batch at a time.

A batch is written with one ledger statement (one per row, in one
transaction, where the database cannot say which rows it wrote) and one
cache write: a file saved or deleted meanwhile keeps its new state while the
rest of its batch is recorded, a batch the ledger refuses is reported and
recorded by the next import without a second upload, and the threads share
one S3 client.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.db import DatabaseError

from queued_storage import ledger_sql, operations, transfer_s3
from queued_storage.backends import QueuedS3Storage, QueuedStorage
from queued_storage.models import StoredFile
from queued_storage.state import FileState, StateStore, Status

BUCKET = "queued-storage-tests"
pytestmark = pytest.mark.django_db(transaction=True)


class ChangedDuringUpload(FileSystemStorage):
    """A remote during whose upload of a file another host saves or deletes it.

    Its ledger row is written as that host's save (and delete) would write it.
    """

    queued: Any = None
    saved = "f03.txt"
    deleted = "f05.txt"

    def _save(self, name: str, content: Any) -> str:
        state = self.queued.state
        if name in (self.saved, self.deleted):
            state.record(name, FileState(Status.PENDING, "elsewhere", 3))
        if name == self.deleted:
            state.forget(name)
        return super()._save(name, content)


@pytest.fixture(params=[True, False], ids=["returning", "row-by-row"])
def returning(request, monkeypatch):
    """Run with the one-statement batch, then with a statement per row."""
    if not request.param:
        from django.db import connection

        monkeypatch.setattr(ledger_sql.statements(connection.alias), "returns", False)
    return request.param


def test_a_batch_records_all_but_the_files_saved_or_deleted_meanwhile(
    tmp_path, returning
):
    storage = QueuedStorage(
        local="django.core.files.storage.FileSystemStorage",
        remote="tests.test_import_batches.ChangedDuringUpload",
        local_options={"location": str(tmp_path / "local")},
        remote_options={"location": str(tmp_path / "remote")},
        delayed=True,
    )
    ChangedDuringUpload.queued = storage
    names = [f"f{i:02d}.txt" for i in range(10)]
    for name in names:
        storage.local.save(name, ContentFile(name.encode()))
    report = operations.bulk_import(storage)
    assert (report.done, report.failures) == (8, 2)
    assert sorted(report.failed) == ["f03.txt", "f05.txt"]
    assert all("deleted or saved again" in why for why in report.failed.values())
    rows = {r.name: r for r in StoredFile.objects.filter(storage=storage.reference)}
    assert (rows["f03.txt"].status, rows["f03.txt"].version) == (
        Status.PENDING,
        "elsewhere",
    )
    assert rows["f05.txt"].status == Status.DELETED
    assert not (tmp_path / "remote" / "f05.txt").exists()
    kept = [name for name in names if name not in ("f03.txt", "f05.txt")]
    for name in kept:
        assert rows[name].status == Status.TRANSFERRED
        assert rows[name].size == len(name.encode())
        assert storage.state.get(name).status == Status.TRANSFERRED
    assert storage.get_state("f03.txt").version == "elsewhere"


def test_a_tombstone_found_by_the_import_is_replaced(fs_queued, returning):
    storage = fs_queued(delayed=True)
    storage.save("old.txt", ContentFile(b"old"))
    storage.delete("old.txt")
    storage.local.save("old.txt", ContentFile(b"restored"))
    storage.local.save("new.txt", ContentFile(b"new"))
    report = operations.bulk_import(storage, concurrency=2)
    assert (report.done, report.failures) == (2, 0)
    rows = StoredFile.objects.filter(storage=storage.reference)
    assert sorted(rows.values_list("name", "status", "size")) == [
        ("new.txt", Status.TRANSFERRED, 3),
        ("old.txt", Status.TRANSFERRED, 8),
    ]


def test_more_files_than_a_batch_are_all_recorded_once(fs_queued, returning):
    storage = fs_queued(delayed=True)
    count = operations.RECORD_BATCH + ledger_sql.UPSERT_MANY + 7
    for i in range(count):
        storage.local.save(f"d{i % 3}/n{i:04d}.txt", ContentFile(b"x" * (i % 5)))
    told: list[int] = []
    unrecorded: list[str] = []
    rows = StoredFile.objects.filter(storage=storage.reference)

    def progress(index: int, total: int, name: str) -> None:
        told.append(index)
        if not rows.filter(name=name, status=Status.TRANSFERRED).exists():
            unrecorded.append(name)

    report = operations.bulk_import(storage, concurrency=4, progress=progress)
    assert (report.done, report.failures, report.skipped) == (count, 0, 0)
    assert told == list(range(1, count + 1))
    assert unrecorded == []  # Each file is counted once it is recorded.
    assert rows.filter(status=Status.TRANSFERRED).count() == count
    assert {size for size in rows.values_list("size", flat=True)} == set(range(5))
    again = operations.bulk_import(storage, concurrency=4)
    assert (again.done, again.skipped) == (0, count)


@pytest.fixture
def site(tmp_path, unique):
    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path / "site")},
        remote_options={"location": f"batches-{unique}"},
        reference=f"batches-{unique}",
    )
    for i in range(12):
        storage.local.save(f"d{i % 3}/f{i:03d}.txt", ContentFile(f"file {i}".encode()))
    return storage


def test_a_batch_the_ledger_refuses_is_recorded_by_the_next_import(
    site, s3_client, monkeypatch
):
    real = StateStore.record_many

    def refused(self: StateStore, *args: Any, **kwargs: Any) -> set[str]:
        raise DatabaseError("the ledger is out of reach")

    monkeypatch.setattr(StateStore, "record_many", refused)
    first = operations.bulk_import(site, concurrency=3)
    assert (first.done, first.failures) == (0, 12)
    assert all(
        why.startswith("moved but not recorded: DatabaseError")
        for why in first.failed.values()
    )
    assert not StoredFile.objects.filter(storage=site.reference).exists()
    monkeypatch.setattr(StateStore, "record_many", real)
    uploaded = {
        item["Key"]: item["LastModified"]
        for item in s3_client.list_objects_v2(
            Bucket=BUCKET, Prefix=site.remote.location + "/"
        )["Contents"]
    }
    assert len(uploaded) == 12
    second = operations.bulk_import(site, concurrency=3)
    assert (second.done, second.failures, second.skipped) == (12, 0, 0)
    rows = StoredFile.objects.filter(storage=site.reference, status=Status.TRANSFERRED)
    assert rows.count() == 12
    again = {
        item["Key"]: item["LastModified"]
        for item in s3_client.list_objects_v2(
            Bucket=BUCKET, Prefix=site.remote.location + "/"
        )["Contents"]
    }
    assert again == uploaded


def test_a_row_the_ledger_refuses_fails_alone(site, monkeypatch):
    real = StateStore.record_many
    bad = "d1/f004.txt"

    def picky(self: StateStore, states: dict[str, Any], **kwargs: Any) -> set[str]:
        if bad in states:
            raise DatabaseError("value too long for this column")
        return real(self, states, **kwargs)

    monkeypatch.setattr(StateStore, "record_many", picky)
    report = operations.bulk_import(site, concurrency=3)
    assert (report.done, report.failures) == (11, 1)
    assert report.failed[bad].startswith("moved but not recorded: DatabaseError")
    rows = StoredFile.objects.filter(storage=site.reference, status=Status.TRANSFERRED)
    assert rows.count() == 11
    assert not rows.filter(name=bad).exists()


def test_import_threads_share_the_s3_client_of_the_calling_thread(site):
    share = transfer_s3.connection_sharer(site.remote, 4)
    seen: list[Any] = []

    def thread() -> None:
        share()
        seen.append(site.remote.connection)

    runner = threading.Thread(target=thread)
    runner.start()
    runner.join()
    assert seen == [site.remote.connection]


def test_more_threads_than_the_client_pool_make_their_own_clients(site):
    pool = site.remote.connection.meta.client.meta.config.max_pool_connections
    share = transfer_s3.connection_sharer(site.remote, pool + 1)
    seen: list[Any] = []

    def thread() -> None:
        share()
        seen.append(site.remote.connection)

    runner = threading.Thread(target=thread)
    runner.start()
    runner.join()
    assert seen[0] is not site.remote.connection
