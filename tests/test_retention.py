"""How long local copies stay once transferred, and the sweep that removes them."""

from __future__ import annotations

import io
import json
import os
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from queued_storage import retention
from queued_storage.backends import QueuedStorage
from queued_storage.models import StoredFile
from queued_storage.state import FileState, Status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_broker() -> Any:
    with override_settings(
        QUEUED_STORAGE_OUTBOX=True, QUEUED_STORAGE_WORKER_DISPATCH=False
    ):
        yield


def row(storage: Any, name: str) -> StoredFile:
    return StoredFile.objects.get(storage=storage.reference, name=name)


@pytest.fixture
def fs_queued(fs_queued: Any) -> Any:
    """Make delayed storages: their transfers run in this process only.

    A worker that an earlier test of the session started would otherwise
    take the message of a save and race the inline transfer these tests
    make.
    """

    def make(**options: Any) -> Any:
        options.setdefault("delayed", True)
        return fs_queued(**options)

    return make


def transferred(storage: Any, name: str, text: bytes = b"0123456789", hours=2) -> str:
    """Save *name*, transfer it in this process, and date the transfer back."""
    name = storage.save(name, ContentFile(text))
    assert storage.transfer(name, now=True).status == Status.TRANSFERRED
    at = timezone.now() - timedelta(hours=hours)
    StoredFile.objects.filter(storage=storage.reference, name=name).update(
        transferred=at
    )
    # The file was written before its transfer finished.
    written = (at - timedelta(minutes=1)).timestamp()
    os.utime(storage.local.path(name), (written, written))
    return name


def read(storage: Any, name: str) -> bytes:
    with storage.open(name) as file:
        return file.read()


def read_local(storage: Any, name: str) -> bytes:
    with storage.local.open(name) as file:
        return file.read()


def test_by_default_local_copies_are_kept(fs_queued):
    storage = fs_queued()
    name = transferred(storage, "kept.txt", hours=1000)
    assert storage.local_retention_period() is None
    assert retention.sweep(storage).removed == 0
    assert storage.local.exists(name)
    assert retention.preview(storage) == {
        "local_bytes": 10, "sweep_files": 0, "sweep_bytes": 0,
    }  # fmt: skip


def test_a_retention_of_zero_removes_the_local_copy_once_transferred(fs_queued):
    storage = fs_queued(local_retention=0)
    name = storage.save("now.txt", ContentFile(b"abc"))
    assert storage.local.exists(name)
    storage.transfer(name, now=True)
    assert not storage.local.exists(name)
    assert row(storage, name).local_deleted is not None
    assert read(storage, name) == b"abc"
    assert retention.local_bytes(storage) == 0


def test_the_setting_is_read_at_call_time(fs_queued):
    storage = fs_queued()
    with override_settings(QUEUED_STORAGE_LOCAL_RETENTION=timedelta(0)):
        name = storage.save("setting.txt", ContentFile(b"abc"))
        storage.transfer(name, now=True)
    assert not storage.local.exists(name)
    with override_settings(QUEUED_STORAGE_LOCAL_RETENTION="1 day"):
        with pytest.raises(ImproperlyConfigured, match="LOCAL_RETENTION"):
            storage.local_retention_period()


def test_bad_options_are_refused_before_anything_is_written(fs_queued):
    with pytest.raises(ImproperlyConfigured, match="local_retention"):
        fs_queued(local_retention=-5)
    with pytest.raises(ImproperlyConfigured, match="local_max_bytes"):
        fs_queued(local_max_bytes="1G")


def test_lifetime_options_leave_the_reference_alone(fs_queued):
    assert fs_queued().reference == fs_queued(local_retention=60).reference


def test_the_sweep_removes_copies_transferred_longer_ago_than_the_period(fs_queued):
    storage = fs_queued(local_retention=3600)
    old = transferred(storage, "old.txt", hours=2)
    recent = transferred(storage, "recent.txt", hours=0)
    assert retention.preview(storage) == {
        "local_bytes": 20, "sweep_files": 1, "sweep_bytes": 10,
    }  # fmt: skip
    report = retention.sweep(storage)
    assert (report.removed, report.freed) == (1, 10)
    assert not storage.local.exists(old)
    assert storage.local.exists(recent)
    assert read(storage, old) == b"0123456789"
    assert retention.preview(storage)["local_bytes"] == 10
    assert retention.sweep(storage).removed == 0


def test_the_sweep_never_removes_an_only_copy(fs_queued):
    storage = fs_queued(local_retention=0)
    pending = storage.save("pending.txt", ContentFile(b"p"))
    failed = storage.save("failed.txt", ContentFile(b"f"))
    storage.local.delete(failed)
    assert storage.transfer(failed, now=True).status == Status.FAILED
    storage.local.save(failed, ContentFile(b"f"))
    StoredFile.objects.filter(storage=storage.reference).update(
        updated=timezone.now() - timedelta(days=3)
    )
    assert retention.sweep(storage).removed == 0
    assert storage.local.exists(pending) and storage.local.exists(failed)


def overwriting(fs_queued: Any, **options: Any) -> Any:
    storage = fs_queued(**options)
    local = storage._options["local"]
    storage._options["local"] = {**local, "allow_overwrite": True}
    assert storage.overwrites
    return storage


def test_a_copy_saved_again_since_its_transfer_is_kept(fs_queued):
    storage = overwriting(fs_queued, local_retention=3600)
    name = transferred(storage, "again.txt")
    assert storage.save(name, ContentFile(b"newer")) == name
    assert retention.sweep(storage).removed == 0
    assert read_local(storage, name) == b"newer"


def test_an_overwrite_recorded_during_the_sweep_keeps_its_copy(fs_queued):
    storage = overwriting(fs_queued, local_retention=3600)
    name = transferred(storage, "race.txt")

    def save_again(claimed: list[Any]) -> None:
        assert [row.name for row in claimed] == [name]
        storage.save(name, ContentFile(b"newer"))

    report = retention.sweep(storage, claimed=save_again)
    assert (report.removed, report.kept) == (0, 1)
    assert read_local(storage, name) == b"newer"
    assert storage.get_state(name).status == Status.PENDING
    assert row(storage, name).local_deleted is None
    assert storage.transfer(name, now=True).status == Status.TRANSFERRED
    with storage.remote.open(name) as remote:
        assert remote.read() == b"newer"


def test_an_overwrite_not_yet_recorded_during_the_sweep_keeps_its_copy(fs_queued):
    storage = overwriting(fs_queued, local_retention=3600)
    name = transferred(storage, "unrecorded.txt")

    def write_over(claimed: list[Any]) -> None:
        # A save that wrote its file and has not recorded its state yet.
        storage.local.save(name, ContentFile(b"newer"))

    assert retention.sweep(storage, claimed=write_over).removed == 0
    assert read_local(storage, name) == b"newer"
    assert row(storage, name).local_deleted is None


def test_a_copy_already_gone_is_recorded_as_removed(fs_queued):
    storage = fs_queued(local_retention=60)
    name = transferred(storage, "gone.txt")
    storage.local.delete(name)
    assert retention.sweep(storage).removed == 1
    assert row(storage, name).local_deleted is not None


def test_a_size_cap_removes_the_oldest_transferred_copies_first(fs_queued):
    storage = fs_queued(local_max_bytes=15)
    names = [transferred(storage, f"cap-{i}.txt", hours=10 - i) for i in range(3)]
    pending = storage.save("cap-pending.txt", ContentFile(b"0123456789"))
    # 40 bytes held; only the transferred ones may go, oldest first.
    assert retention.preview(storage) == {
        "local_bytes": 40, "sweep_files": 3, "sweep_bytes": 30,
    }  # fmt: skip
    assert retention.sweep(storage, batch=2).removed == 3
    assert storage.local.exists(pending)
    assert not any(storage.local.exists(name) for name in names)


def test_a_size_cap_stops_once_under_it(fs_queued):
    storage = fs_queued(local_max_bytes=15)
    names = [transferred(storage, f"under-{i}.txt", hours=10 - i) for i in range(3)]
    assert retention.sweep(storage, batch=1).removed == 2
    assert [storage.local.exists(name) for name in names] == [False, False, True]


def test_transfer_and_delete_records_that_the_local_copy_went(fs_queued):
    storage = fs_queued(task="queued_storage.tasks.TransferAndDelete")
    name = storage.save("tad.txt", ContentFile(b"abc"))
    storage.transfer(name, now=True)
    assert not storage.local.exists(name)
    assert row(storage, name).local_deleted is not None
    assert retention.local_bytes(storage) == 0


def test_status_shows_local_bytes_and_the_sweep_frees_them(fs_queued):
    storage = fs_queued(local_retention=60, reference="retained")
    transferred(storage, "cmd.txt")
    out = io.StringIO()
    call_command("queued_storage", "status", "--storage", "retained", stdout=out)
    assert "retained: 10 bytes held locally; the next sweep frees 10 bytes" in (
        out.getvalue()
    )
    out = io.StringIO()
    call_command(
        "queued_storage", "sweep", "--storage", "retained", "--json", stdout=out
    )
    assert json.loads(out.getvalue())["retained"] == {
        "removed": 1, "freed": 10, "kept": 0,
    }  # fmt: skip
    out = io.StringIO()
    call_command(
        "queued_storage", "status", "--storage", "retained", "--json", stdout=out
    )
    assert json.loads(out.getvalue())["local"]["retained"]["local_bytes"] == 0


def test_a_saved_file_holds_local_bytes_again_after_its_copy_went(fs_queued):
    storage = fs_queued(local_retention=0)
    name = storage.save("back.txt", ContentFile(b"abc"))
    storage.transfer(name, now=True)
    storage.delete(name)
    storage.save(name, ContentFile(b"abcd"))
    assert row(storage, name).local_deleted is None
    assert retention.local_bytes(storage) == 4
    assert storage.state.get(name) == FileState(
        Status.PENDING, row(storage, name).version, 4
    )


def test_bad_retention_settings_are_reported_by_a_check():
    from django.core.checks import run_checks

    def ids(**changes: Any) -> list[str]:
        with override_settings(**changes):
            return [e.id for e in run_checks() if e.id.endswith("040")]

    assert ids() == []
    assert "queued_storage.E040" in ids(QUEUED_STORAGE_LOCAL_MAX_BYTES=-1)
    assert ids(QUEUED_STORAGE_LEDGER=False) == []
    assert ids(QUEUED_STORAGE_LEDGER=False, QUEUED_STORAGE_LOCAL_RETENTION=0) == []
    assert "queued_storage.W040" in ids(
        QUEUED_STORAGE_LEDGER=False, QUEUED_STORAGE_LOCAL_RETENTION=60
    )


def test_a_bad_setting_in_the_worker_leaves_the_transfer_recorded(fs_queued):
    storage = fs_queued()
    name = storage.save("bad.txt", ContentFile(b"abc"))
    with override_settings(QUEUED_STORAGE_LOCAL_RETENTION="soon"):
        outcome = storage.transfer(name, now=True)
    assert outcome.status == Status.TRANSFERRED
    assert storage.local.exists(name)


def test_a_retention_of_zero_works_without_the_ledger(fs_queued):
    storage = fs_queued(local_retention=0)
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        name = storage.save("no-ledger.txt", ContentFile(b"abc"))
        assert storage.transfer(name, now=True).status == Status.TRANSFERRED
        assert not storage.local.exists(name)
        assert read(storage, name) == b"abc"


def test_a_host_sweeps_only_the_copies_it_wrote_unless_the_local_is_shared(fs_queued):
    storage = fs_queued(local_retention=60)
    mine = transferred(storage, "mine.txt")
    theirs = transferred(storage, "theirs.txt")
    StoredFile.objects.filter(name=theirs).update(host="another-host")
    assert retention.preview(storage)["local_bytes"] == 10
    assert retention.sweep(storage).removed == 1
    assert not storage.local.exists(mine)
    assert storage.local.exists(theirs)
    assert row(storage, theirs).local_deleted is None
    with override_settings(QUEUED_STORAGE_SHARED_LOCAL=True):
        assert retention.sweep(storage).removed == 1
    assert not storage.local.exists(theirs)


def test_a_local_storage_not_on_disk_has_its_copy_deleted_by_the_sweep(tmp_path):
    storage = QueuedStorage(
        local="django.core.files.storage.InMemoryStorage",
        remote="django.core.files.storage.FileSystemStorage",
        remote_options={"location": str(tmp_path / "remote")},
        local_retention=3600,
        delayed=True,
    )
    name = storage.save("memory.txt", ContentFile(b"in memory"))
    assert storage.transfer(name, now=True).status == Status.TRANSFERRED
    # Its path() names a file that is not on disk.
    assert not os.path.exists(storage.local.path(name))
    StoredFile.objects.filter(storage=storage.reference, name=name).update(
        transferred=timezone.now() - timedelta(hours=2)
    )
    assert retention.sweep(storage).removed == 1
    assert not storage.local.exists(name)
    assert row(storage, name).local_deleted is not None
    assert read(storage, name) == b"in memory"
