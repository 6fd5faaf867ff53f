"""The import moving files from several threads at once, against real S3.

Each file must be moved exactly once and recorded, a file that fails must
be reported without stopping the others, and a wrong concurrency is refused
before anything moves.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError

from queued_storage import operations
from queued_storage.backends import QueuedS3Storage
from queued_storage.models import StoredFile
from queued_storage.state import Status

BUCKET = "queued-storage-tests"
COUNT = 24
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def site(tmp_path, unique):
    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path / "site")},
        remote_options={"location": f"threads-{unique}"},
        reference=f"threads-{unique}",
    )
    for i in range(COUNT):
        storage.local.save(f"d{i % 6}/f{i:03d}.txt", ContentFile(f"file {i}".encode()))
    return storage


def remote_keys(s3_client: Any, prefix: str) -> list[str]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix + "/"
    )
    return [item["Key"] for page in pages for item in page.get("Contents", ())]


@pytest.fixture
def transfers(monkeypatch):
    """Record the name and thread of every transfer the import makes."""
    made: list[tuple[str, str]] = []
    real = operations.transfer_file
    lock = threading.Lock()

    def transfer_file(name: str, *args: Any, **kwargs: Any) -> Any:
        with lock:
            made.append((name, threading.current_thread().name))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(operations, "transfer_file", transfer_file)
    return made


def test_import_with_threads_moves_and_records_every_file_once(
    site, s3_client, transfers
):
    moved: list[str] = []
    report = operations.bulk_import(site, concurrency=4, found=moved.append)
    names = [f"d{i % 6}/f{i:03d}.txt" for i in range(COUNT)]
    assert (report.done, report.failures, report.skipped) == (COUNT, 0, 0)
    assert sorted(moved) == sorted(names)
    assert sorted(name for name, _ in transfers) == sorted(names)
    assert len({thread for _, thread in transfers}) > 1
    assert main_thread_moved_nothing(transfers)
    prefix = site.remote.location
    assert sorted(remote_keys(s3_client, prefix)) == sorted(
        f"{prefix}/{name}" for name in names
    )
    rows = StoredFile.objects.filter(storage=site.reference)
    assert rows.filter(status=Status.TRANSFERRED).count() == COUNT
    assert all(site.using_remote(name) for name in names)
    again = operations.bulk_import(site, concurrency=4)
    assert (again.done, again.skipped) == (0, COUNT)


def main_thread_moved_nothing(transfers: list[tuple[str, str]]) -> bool:
    main = threading.main_thread().name
    return all(thread != main for _, thread in transfers)


def test_a_failing_file_is_reported_and_the_others_still_move(site, s3_client):
    taken = f"{site.remote.location}/d1/f001.txt"
    s3_client.put_object(Bucket=BUCKET, Key=taken, Body=b"someone else's")
    report = operations.bulk_import(site, concurrency=3)
    assert (report.done, report.failures) == (COUNT - 1, 1)
    assert list(report.failed) == ["d1/f001.txt"]
    assert "RemoteConflict" in report.failed["d1/f001.txt"]
    body = s3_client.get_object(Bucket=BUCKET, Key=taken)["Body"].read()
    assert body == b"someone else's"
    assert not site.using_remote("d1/f001.txt")


def test_limit_and_concurrency_move_exactly_the_limit(site, s3_client):
    report = operations.bulk_import(site, concurrency=4, limit=7)
    assert report.done == 7
    assert len(remote_keys(s3_client, site.remote.location)) == 7
    rows = StoredFile.objects.filter(storage=site.reference, status=Status.TRANSFERRED)
    assert rows.count() == 7


def test_concurrency_below_one_is_refused_before_anything_moves(site, s3_client):
    with pytest.raises(ValueError, match="at least 1"):
        operations.bulk_import(site, concurrency=0)
    with pytest.raises(CommandError, match="--concurrency must be at least 1"):
        call_command(
            "queued_storage", "import", "--storage", "queued", "--concurrency", "0",
            stdout=io.StringIO(),
        )  # fmt: skip
    assert remote_keys(s3_client, site.remote.location) == []
    assert not StoredFile.objects.filter(storage=site.reference).exists()
