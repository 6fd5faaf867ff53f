"""The state store when its cache server is down: it logs and goes on.

The cache here is a real Redis client aimed at a port nothing listens on,
so every call fails as it does when the server stops.
"""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.test import override_settings

from queued_storage.models import StoredFile
from queued_storage.state import FileState, Status
from tests.services.base import free_port


@pytest.fixture
def down(unique):
    """Switch the state cache to a Redis server that is not running."""
    cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
    caches = {**settings.CACHES, "down": cache}
    with override_settings(
        CACHES=caches, QUEUED_STORAGE_CACHE="down",
        QUEUED_STORAGE_QUEUE=f"cache-down-{unique}",
    ):  # fmt: skip
        yield


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.django_db(transaction=True)
def test_with_the_cache_down_the_ledger_answers_and_nothing_raises(
    fs_queued, down, caplog
):
    storage = fs_queued(delayed=True)
    with caplog.at_level(logging.WARNING, logger="queued_storage"):
        name = storage.save("down.txt", ContentFile(b"x"))
        assert storage.get_state(name).status == Status.PENDING
        storage.state.evict([name])
        storage.state.drop(name)
    assert not StoredFile.objects.filter(name=name).exists()
    logged = warnings(caplog)
    assert any("entries not removed" in m for m in logged)
    assert any("state not removed" in m for m in logged)


def test_without_the_ledger_a_cache_that_is_down_reads_as_empty(
    fs_queued, down, caplog
):
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        storage = fs_queued(delayed=True)
        state = storage.state
        with caplog.at_level(logging.WARNING, logger="queued_storage"):
            assert not state.in_use("anything.txt")
            moved = FileState(Status.TRANSFERRED, "v", 1)
            # Nothing recorded can be told apart from a stale task: the
            # change is let through, and written nowhere.
            assert state.compare_and_set("anything.txt", "v", moved)
        assert state.host_of("anything.txt") == ""
        assert state.names_below("folder") == []
    assert any("reading around it" in m for m in warnings(caplog))


def test_evicting_no_names_asks_the_cache_nothing(fs_queued, down, caplog):
    storage = fs_queued(delayed=True)
    with caplog.at_level(logging.WARNING, logger="queued_storage"):
        storage.state.evict([])
    assert warnings(caplog) == []
