"""Attacks on the storage's claims, each kept as a regression test."""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, InMemoryStorage

from queued_storage.backends import QueuedStorage
from queued_storage.models import StoredFile
from queued_storage.status import FileState, Status

MEMORY = "django.core.files.storage.InMemoryStorage"


@pytest.mark.django_db(transaction=True)
def test_deleting_a_directory_from_asyncio_run_marks_its_files_deleted(unique):
    """Deleting a directory touches the ledger from the event loop's thread."""
    storage = QueuedStorage(local=MEMORY, remote=MEMORY, delayed=True)
    name = storage.save(f"{unique}/a.txt", ContentFile(b"a"))

    async def delete_directory() -> None:
        storage.delete(unique)

    asyncio.run(delete_directory())
    assert not storage.exists(name)
    row = StoredFile.objects.get(storage=storage.reference, name=name)
    assert row.status == "deleted"


class RacingLocal(FileSystemStorage):
    """A local disk where another host records the name during the first write.

    The second write (the move to another name) fills the disk midway: it
    leaves half its bytes behind and raises, as ``FileSystemStorage`` does
    when the disk is full.
    """

    writes = 0
    queued: Any = None

    def _save(self, name: str, content: Any) -> str:
        type(self).writes += 1
        if type(self).writes == 1:
            # Another host, with a disk of its own, records the same name now.
            other = FileState(Status.PENDING, "0123456789abcdef", 1)
            assert self.queued.state.record(name, other, host="other", exclusive=True)
            return super()._save(name, content)
        with open(self.path(name), "wb") as partial:
            partial.write(b"hal")
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.django_db(transaction=True)
def test_a_save_that_fails_moving_to_another_name_leaves_no_partial_copy(
    tmp_path, unique
):
    RacingLocal.writes = 0
    storage = QueuedStorage(
        local="tests.test_attacks.RacingLocal",
        remote="django.core.files.storage.FileSystemStorage",
        local_options={"location": str(tmp_path / "local")},
        remote_options={"location": str(tmp_path / "remote")},
        delayed=True,
    )
    RacingLocal.queued = storage
    with pytest.raises(OSError):
        storage.save(f"{unique}.txt", ContentFile(b"half"))
    assert RacingLocal.writes == 2
    assert sorted(os.listdir(tmp_path / "local")) == []
    rows = StoredFile.objects.filter(storage=storage.reference)
    assert [(row.name, row.host) for row in rows] == [(f"{unique}.txt", "other")]


class DeletedDuringUpload(FileSystemStorage):
    """A remote where the file is deleted, through the queued storage, mid-upload."""

    queued: Any = None

    def _save(self, name: str, content: Any) -> str:
        self.queued.delete(name)
        return super()._save(name, content)


@pytest.mark.django_db(transaction=True)
def test_a_file_deleted_while_import_uploads_it_stays_deleted(tmp_path, unique):
    from queued_storage.operations import bulk_import

    storage = QueuedStorage(
        local="django.core.files.storage.FileSystemStorage",
        remote="tests.test_attacks.DeletedDuringUpload",
        local_options={"location": str(tmp_path / "local")},
        remote_options={"location": str(tmp_path / "remote")},
        delayed=True,
    )
    DeletedDuringUpload.queued = storage
    name = storage.save(f"{unique}.txt", ContentFile(b"private"))
    report = bulk_import(storage)
    assert (report.done, report.failures) == (0, 1)
    assert "deleted or saved again" in report.failed[name]
    row = StoredFile.objects.get(storage=storage.reference, name=name)
    assert row.status == "deleted"
    assert not storage.exists(name)
    assert not (tmp_path / "remote" / name).exists()


class SavedIntoDuringDelete(InMemoryStorage):
    """A local storage where another request saves into a directory being deleted.

    The save lands after the queued storage listed the directory's files and
    before the local storage removes the directory with all it holds.
    """

    queued: Any = None
    late: list[str] = []

    def delete(self, name: str) -> None:
        if not self.late:
            self.late.append(self.queued.save(f"{name}/late.txt", ContentFile(b"l")))
        super().delete(name)


@pytest.mark.django_db(transaction=True)
def test_a_file_saved_into_a_directory_while_it_is_deleted_is_not_left_pending(
    unique,
):
    SavedIntoDuringDelete.late = []
    storage = QueuedStorage(
        local="tests.test_attacks.SavedIntoDuringDelete", remote=MEMORY, delayed=True
    )
    SavedIntoDuringDelete.queued = storage
    storage.save(f"{unique}/a.txt", ContentFile(b"a"))
    storage.delete(unique)
    (late,) = SavedIntoDuringDelete.late
    assert not storage.local.exists(late)
    row = StoredFile.objects.get(storage=storage.reference, name=late)
    assert row.status == "deleted"
    assert not storage.exists(late)


@pytest.mark.django_db(transaction=True)
def test_a_memory_local_never_touches_a_disk_file_at_the_path_it_names(
    tmp_path, settings
):
    """InMemoryStorage's path() names a place under MEDIA_ROOT it never uses.

    A real file found there belongs to someone else: neither TransferAndDelete
    nor the retention sweep may measure, move or remove it.
    """
    settings.MEDIA_ROOT = str(tmp_path / "media")
    storage = QueuedStorage(
        local=MEMORY,
        remote="django.core.files.storage.FileSystemStorage",
        remote_options={"location": str(tmp_path / "remote")},
        task="queued_storage.tasks.TransferAndDelete",
        delayed=True,
    )
    name = storage.save("report.txt", ContentFile(b"in memory"))
    on_disk = storage.local.path(name)
    os.makedirs(os.path.dirname(on_disk), exist_ok=True)
    with open(on_disk, "wb") as handle:
        handle.write(b"someone else's file")

    assert storage.transfer(name, now=True).status == Status.TRANSFERRED

    assert not storage.local.exists(name)
    with open(on_disk, "rb") as handle:
        assert handle.read() == b"someone else's file"
    with storage.open(name) as handle:
        assert handle.read() == b"in memory"


@pytest.mark.django_db(transaction=True)
def test_the_sweep_of_a_memory_local_leaves_a_disk_file_at_its_path(tmp_path, settings):
    from datetime import timedelta

    from django.utils import timezone

    from queued_storage import retention

    settings.MEDIA_ROOT = str(tmp_path / "media")
    storage = QueuedStorage(
        local=MEMORY,
        remote="django.core.files.storage.FileSystemStorage",
        remote_options={"location": str(tmp_path / "remote")},
        local_retention=60,
        delayed=True,
    )
    name = storage.save("kept.txt", ContentFile(b"in memory"))
    assert storage.transfer(name, now=True).status == Status.TRANSFERRED
    on_disk = storage.local.path(name)
    os.makedirs(os.path.dirname(on_disk), exist_ok=True)
    with open(on_disk, "wb") as handle:
        handle.write(b"someone else's file")
    StoredFile.objects.filter(storage=storage.reference, name=name).update(
        transferred=timezone.now() - timedelta(hours=1)
    )

    assert retention.sweep(storage).removed == 1

    assert not storage.local.exists(name)
    with open(on_disk, "rb") as handle:
        assert handle.read() == b"someone else's file"


class OverwriteDuringUpload(FileSystemStorage):
    """A remote whose upload is overtaken by a save of the same name.

    While the previous version uploads, a save on the overwriting local disk
    writes its new bytes and has not recorded its state yet.
    """

    local: Any = None

    def _save(self, name: str, content: Any) -> str:
        saved = super()._save(name, content)
        if self.local is not None:
            self.local.save(name, ContentFile(b"newer"))
        return saved


@pytest.mark.django_db(transaction=True)
def test_a_retention_of_zero_keeps_a_copy_overwritten_during_its_upload(tmp_path):
    """The new bytes of a save not yet recorded survive the previous transfer."""
    fs = "django.core.files.storage.FileSystemStorage"
    storage = QueuedStorage(
        local=fs,
        remote=f"{__name__}.OverwriteDuringUpload",
        local_options={"location": str(tmp_path / "l"), "allow_overwrite": True},
        remote_options={"location": str(tmp_path / "r")},
        local_retention=0,
        delayed=True,
    )
    name = storage.save("race.txt", ContentFile(b"older"))
    OverwriteDuringUpload.local = storage.local
    try:
        assert storage.transfer(name, now=True).status == Status.TRANSFERRED
    finally:
        OverwriteDuringUpload.local = None
    with storage.local.open(name) as local:
        assert local.read() == b"newer"


@pytest.mark.django_db(transaction=True)
def test_a_framework_message_moved_to_another_storage_or_cut_changes_nothing(
    fs_queued,
):
    """Cross-storage, truncated and ill-typed framework messages are refused."""
    from django.test import override_settings

    from queued_storage.exceptions import InvalidMessage
    from queued_storage.runners.django_tasks import task_backends, transfer

    with override_settings(QUEUED_STORAGE_TASKS_BACKEND="dummy"):
        dummy = task_backends["dummy"]
        dummy.clear()
        storage = fs_queued(runner="django_tasks")
        name = storage.save("cross.txt", ContentFile(b"x"))
        [result] = dummy.results
        dummy.clear()
    kwargs = dict(result.kwargs)
    with pytest.raises(InvalidMessage, match="differ"):
        transfer.call(**{**kwargs, "storage": "fs"})
    with pytest.raises(InvalidMessage, match="differ"):
        transfer.call(**{**kwargs, "version": "0" * 16})
    with pytest.raises(InvalidMessage):
        transfer.call(**{**kwargs, "name": ["cross.txt"]})
    with pytest.raises(InvalidMessage):
        transfer.call(**{**kwargs, "signature": kwargs["signature"][:20]})
    with pytest.raises(TypeError):
        transfer.call(**{k: v for k, v in kwargs.items() if k != "signature"})
    row = StoredFile.objects.get(storage=storage.reference, name=name)
    assert (row.status, row.attempts) == (Status.PENDING, 0)
    assert storage.local.exists(name) and not storage.remote.exists(name)


@pytest.mark.django_db(transaction=True)
def test_a_misspelt_runner_setting_raises_before_the_file_is_written(fs_queued):
    """A save refuses at once, rather than after writing and recording the file."""
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    storage = fs_queued()
    with override_settings(QUEUED_STORAGE_RUNNER="django_task"):
        with pytest.raises(ImproperlyConfigured, match="QUEUED_STORAGE_RUNNER"):
            storage.save("typo.txt", ContentFile(b"x"))
    assert not storage.local.exists("typo.txt")
    assert not StoredFile.objects.filter(storage=storage.reference).exists()
