"""Attacks on the storage's claims, each kept as a regression test."""

from __future__ import annotations

import asyncio

import pytest
from django.core.files.base import ContentFile

from queued_storage.backends import QueuedStorage
from queued_storage.models import StoredFile

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
