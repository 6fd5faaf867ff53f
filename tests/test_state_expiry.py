"""The state cache shrinks: entries expire with the ledger on, purge clears them.

And retried messages outlive no configured message age (check W011).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import caches
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from queued_storage import checks, operations
from queued_storage.models import StoredFile
from queued_storage.state import LEDGER_CACHE_TIMEOUT

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_db1(servers):
    import redis

    client = redis.Redis.from_url(servers["redis"].url_for(1))
    yield client
    client.close()


def ttl(client, storage, name):
    return client.ttl(
        caches["default"].make_and_validate_key(storage.get_cache_key(name))
    )


def test_state_cache_entries_expire_by_default_with_the_ledger(fs_queued, redis_db1):
    storage = fs_queued(delayed=True)
    name = storage.save("entry.txt", ContentFile(b"x"))
    assert 0 < ttl(redis_db1, storage, name) <= LEDGER_CACHE_TIMEOUT
    storage.delete(name)  # The tombstone expires too.
    assert 0 < ttl(redis_db1, storage, name) <= LEDGER_CACHE_TIMEOUT


def test_state_cache_timeout_setting_is_read_at_call_time(fs_queued, redis_db1):
    storage = fs_queued(delayed=True)
    with override_settings(QUEUED_STORAGE_CACHE_TIMEOUT=30):
        name = storage.save("short.txt", ContentFile(b"x"))
    assert 0 < ttl(redis_db1, storage, name) <= 30
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        name = storage.save("kept.txt", ContentFile(b"x"))
    assert ttl(redis_db1, storage, name) == -1  # The cache is the only copy.


def test_expired_state_entry_is_answered_by_the_ledger(fs_queued, redis_db1):
    storage = fs_queued(delayed=True)
    name = storage.save("expired.txt", ContentFile(b"x"))
    recorded = storage.get_state(name)
    redis_db1.delete(
        caches["default"].make_and_validate_key(storage.get_cache_key(name))
    )
    storage.local.delete(name)  # Were the storages probed, it would look gone.
    assert storage.get_state(name) == recorded


@pytest.mark.parametrize("through", ["function", "command"])
def test_purge_removes_the_tombstones_from_the_cache(fs_queued, redis_db1, through):
    storage = fs_queued(delayed=True)
    old = [storage.save(f"old-{i}.txt", ContentFile(b"x")) for i in range(3)]
    recent = storage.save("recent.txt", ContentFile(b"x"))
    live = storage.save("live.txt", ContentFile(b"x"))
    for name in [*old, recent]:
        storage.delete(name)
    long_ago = timezone.now() - timedelta(days=60)
    StoredFile.objects.filter(name__in=old).update(updated=long_ago)
    key = caches["default"].make_and_validate_key
    assert all(redis_db1.exists(key(storage.get_cache_key(name))) for name in old)

    if through == "function":
        assert operations.purge(timedelta(days=30), storage.reference) == 3
    else:
        call_command("queued_storage", "purge", "--storage", storage.reference)

    assert not any(redis_db1.exists(key(storage.get_cache_key(name))) for name in old)
    assert redis_db1.exists(key(storage.get_cache_key(recent)))
    assert storage.get_state(recent).is_deleted
    assert storage.get_state(live).status == "pending"
    names = set(StoredFile.objects.values_list("name", flat=True))
    assert names >= {recent, live} and not names & set(old)


def test_purge_keeps_a_row_saved_again(fs_queued):
    storage = fs_queued(delayed=True)
    name = storage.save("again.txt", ContentFile(b"x"))
    storage.delete(name)
    StoredFile.objects.filter(name=name).update(updated=timezone.now() - timedelta(60))
    assert storage.save(name, ContentFile(b"y")) == name
    assert operations.purge(timedelta(days=30), storage.reference) == 0
    assert storage.get_state(name).status == "pending"


# A message age shorter than the longest retry delay (W011) -----------------


@pytest.mark.parametrize(
    ("retries", "delay", "cap", "max_age", "warned"),
    [
        (5, 60, 3600, 7 * 24 * 3600, False),  # The defaults.
        (5, 60, 3600, 960, True),  # Retries 0 to 4 wait up to 60 * 2**4 s.
        (5, 60, 3600, 961, False),
        (10, 60, 3600, 3600, True),  # Later ones wait up to the cap, an hour.
        (10, 60, 3600, 3601, False),
        (3, 60, 3600, 240, True),  # Retries 0, 1, 2 wait up to 60, 120, 240 s.
        (3, 60, 3600, 200, True),
        (3, 60, 3600, 241, False),
        (0, 60, 3600, 10, False),  # No retries, no retried messages.
    ],
)
def test_check_flags_message_max_age_shorter_than_the_longest_retry_delay(
    retries, delay, cap, max_age, warned
):
    with override_settings(
        QUEUED_STORAGE_RETRIES=retries,
        QUEUED_STORAGE_RETRY_DELAY=delay,
        QUEUED_STORAGE_RETRY_BACKOFF_MAX=cap,
        QUEUED_STORAGE_MESSAGE_MAX_AGE=max_age,
    ):
        messages = checks.check_message_max_age()
    assert [m.id for m in messages] == (["queued_storage.W011"] if warned else [])
    if warned:
        assert "QUEUED_STORAGE_MESSAGE_MAX_AGE" in messages[0].msg


def test_max_age_check_leaves_invalid_numbers_to_the_settings_check():
    with override_settings(QUEUED_STORAGE_RETRY_DELAY="soon"):
        assert checks.check_message_max_age() == []
