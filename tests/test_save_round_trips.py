"""What a save costs in the default configuration: one cache write, one statement.

The commands are counted on the real Redis server (``MONITOR``) and the
statements on the real database connection; the local storage's own file
system work is all that comes on top.
"""

from __future__ import annotations

import threading
import uuid

import pytest
import redis
from django.core.files.base import ContentFile
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from queued_storage.models import StoredFile
from queued_storage.state import Status

pytestmark = pytest.mark.django_db(transaction=True)


class Monitor:
    """The commands the Redis server runs between two marks, from MONITOR."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.mark = f"mark-{uuid.uuid4().hex}"
        self.commands: list[dict] = []
        self._monitor = self.client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        marks = 0
        for command in self._monitor.listen():
            if self.mark in command["command"]:
                marks += 1
                if marks == 2:
                    return
                continue
            if marks == 1:
                self.commands.append(command)

    def __enter__(self) -> Monitor:
        self._thread.start()
        self.client.echo(self.mark)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.echo(self.mark)
        self._thread.join(timeout=10)
        self._monitor.__exit__(None, None, None)
        self.client.close()


@pytest.fixture
def quiet():
    """No dispatcher sends (and no worker transfers) while commands are counted."""
    with override_settings(QUEUED_STORAGE_WORKER_DISPATCH=False):
        yield


def cache_commands(monitor: Monitor, db: int) -> list[str]:
    return [c["command"] for c in monitor.commands if c["db"] == db]


@pytest.mark.parametrize("size", [10 * 1024, 1024 * 1024], ids=["10KiB", "1MiB"])
def test_a_default_save_writes_the_cache_once_and_runs_one_ledger_statement(
    fs_queued, unique, servers, quiet, size
):
    storage = fs_queued(reference=f"rt-{unique}")
    storage.save("warm-up.bin", ContentFile(b"w"))  # Connections open.
    key = storage.state.key(f"{unique}.bin")
    with Monitor(servers["redis"].url_for(0)) as monitor:
        with CaptureQueriesContext(connection) as queries:
            name = storage.save(f"{unique}.bin", ContentFile(b"x" * size))
    assert name == f"{unique}.bin"
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT"]
    cache = cache_commands(monitor, db=1)
    assert len(cache) == 1, cache
    assert cache[0].startswith("SET ") and key in cache[0]
    # Nothing is published: the ledger row is the message.
    assert cache_commands(monitor, db=0) == []
    found = StoredFile.objects.get(storage=storage.reference, name=name)
    assert (found.status, found.outbox, found.size) == (Status.PENDING, True, size)


def test_a_save_into_a_name_recorded_elsewhere_moves_to_a_free_one(
    fs_queued, unique, quiet
):
    # Another host (another local folder) recorded the name; this host's
    # folder does not have it, so only the ledger's write can refuse it.
    other = fs_queued(reference=f"rt-{unique}")
    first = other.save("shared.txt", ContentFile(b"first"))
    other.local.delete(first)
    with CaptureQueriesContext(connection) as queries:
        second = other.save("shared.txt", ContentFile(b"second"))
    assert second != first
    assert len(queries.captured_queries) > 1  # Refused, then recorded elsewhere.
    with other.open(second) as opened:
        assert opened.read() == b"second"
    states = other.state.get_many([first, second])
    assert states[first].status == states[second].status == Status.PENDING
    assert StoredFile.objects.get(storage=other.reference, name=first).version


@pytest.mark.parametrize("setting", [False], ids=["direct"])
def test_without_the_outbox_a_save_publishes_its_message(
    fs_queued, unique, servers, quiet, setting
):
    storage = fs_queued(reference=f"rt-{unique}")
    storage.save("warm-up.bin", ContentFile(b"w"))
    with override_settings(QUEUED_STORAGE_OUTBOX=setting):
        with Monitor(servers["redis"].url_for(0)) as monitor:
            name = storage.save(f"{unique}.bin", ContentFile(b"x"))
    assert not StoredFile.objects.get(storage=storage.reference, name=name).outbox
    assert cache_commands(monitor, db=0)  # The message, sent by save().
