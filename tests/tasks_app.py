"""Storages and a task for the tests of the django_tasks runner.

The storages name :func:`transfer`, a task of this module, so that a
``db_worker`` process imports this module (and builds the storages under the
same references) when it runs its first transfer. Every directory lies under
``MEDIA_ROOT``'s sibling ``-tasks``, where the test process and its workers
find the same files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage

from queued_storage.backends import QueuedStorage
from queued_storage.runners.django_tasks import (
    TaskTransfer,
    TaskTransferAndDelete,
    task,
)

ROOT = Path(settings.MEDIA_ROOT + "-tasks")
#: While this file exists, the slow remote refuses every upload.
OUTAGE = ROOT / "remote-is-down"


class SlowRemote(FileSystemStorage):
    """A remote whose uploads take ``upload_seconds`` and fail during an outage."""

    def __init__(self, upload_seconds: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.upload_seconds = upload_seconds

    def _save(self, name: str, content: Any) -> str:
        if OUTAGE.exists():
            raise OSError(f"the remote refuses {name!r}: it is down")
        body = b"".join(content.chunks())
        time.sleep(self.upload_seconds)
        return str(super()._save(name, ContentFile(body)))


class MarkingTransfer(TaskTransfer):
    """Leave a mark beside each file transferred, as a custom transfer would."""

    def after_transfer(self, queued: QueuedStorage, name: str) -> None:
        (ROOT / "marks").mkdir(parents=True, exist_ok=True)
        (ROOT / "marks" / name.replace("/", "_")).write_text("done")


@task
def transfer(storage: str, name: str, version: str, signature: str) -> bool:
    """Move a file of the storages below, and mark it."""
    return MarkingTransfer().receive(
        transfer.module_path, storage, name, version, signature
    )


@task
def transfer_and_delete(storage: str, name: str, version: str, signature: str) -> bool:
    """Move a file of the storages below, then delete its local copy."""
    return TaskTransferAndDelete().receive(
        transfer_and_delete.module_path, storage, name, version, signature
    )


def _storage(reference: str, task_path: str, **options: Any) -> QueuedStorage:
    """Return a queued storage of folders under ROOT/<reference>."""
    overwrite = {"allow_overwrite": True} if options.pop("overwrite", False) else {}
    return QueuedStorage(
        local="django.core.files.storage.FileSystemStorage",
        remote="tests.tasks_app.SlowRemote",
        local_options={"location": str(ROOT / reference / "local"), **overwrite},
        remote_options={
            "location": str(ROOT / reference / "remote"),
            "upload_seconds": float(os.environ.get("QS_TEST_UPLOAD_SECONDS", "1")),
            **overwrite,
        },
        reference=reference,
        runner="django_tasks",
        task=task_path,
        **options,
    )


#: Removes the local copy as soon as the transfer is recorded.
retained_storage = _storage(
    "tasks-retention", "tests.tasks_app.transfer", local_retention=0
)
#: Its task removes the local copy itself.
deleting_storage = _storage("tasks-delete", "tests.tasks_app.transfer_and_delete")
#: Its local storage replaces a file saved again under the same name.
overwriting_storage = _storage(
    "tasks-overwrite", "tests.tasks_app.transfer", overwrite=True
)

slow_storage = QueuedStorage(
    local="django.core.files.storage.FileSystemStorage",
    remote="tests.tasks_app.SlowRemote",
    local_options={"location": str(ROOT / "local")},
    remote_options={
        "location": str(ROOT / "remote"),
        "upload_seconds": float(os.environ.get("QS_TEST_UPLOAD_SECONDS", "1")),
    },
    reference="tasks-slow",
    runner="django_tasks",
    task="tests.tasks_app.transfer",
)
