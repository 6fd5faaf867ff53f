"""State writes through the Redis client kept per cache, and the quick name choice.

Every save writes one state entry. For Django's own ``RedisCache`` the state
store sends that write through a client it keeps instead of the one Django
builds per call; what lands on the server must be what ``cache.set()`` would
have written, wherever the settings point the cache at the time.
"""

from __future__ import annotations

import threading

import pytest
import redis
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.files.base import ContentFile
from django.test import override_settings

from queued_storage import cache_writes
from queued_storage.backends import QueuedStorage
from queued_storage.state import LEDGER_CACHE_TIMEOUT, FileState, Status

STATE = FileState(Status.PENDING, "0123456789abcdef", 5, content_type="text/plain")

#: Django's way to its writes, counted by the subclass below.
written: list[str] = []


class CountingRedisCache(RedisCache):
    """A Redis cache whose own ``set()`` must keep being called."""

    def set(self, key, value, timeout=None, version=None):
        written.append(key)
        super().set(key, value, timeout=timeout, version=version)


def redis_cache(servers, db: int, **extra) -> dict:
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": servers["redis"].url_for(db),
        "OPTIONS": {"serializer": "queued_storage.serializers.JSONSerializer"},
        **extra,
    }


@pytest.fixture
def state_cache(servers):
    """Point the state cache at a Redis database of its own, with a prefix."""
    cache = redis_cache(servers, 5, KEY_PREFIX="site", VERSION=3)
    with override_settings(
        CACHES={**settings.CACHES, "states": cache}, QUEUED_STORAGE_CACHE="states"
    ):
        yield redis.Redis.from_url(servers["redis"].url_for(5))


@pytest.mark.django_db(transaction=True)
def test_a_kept_client_write_reads_back_through_django_with_prefix_and_version(
    fs_queued, unique, state_cache
):
    storage = fs_queued(reference=f"kept-{unique}")
    storage.state.remember("a.txt", STATE)
    key = storage.state.key("a.txt")
    cache = caches["states"]
    assert cache._cache in cache_writes._clients  # The kept client wrote it.
    assert FileState.from_cache(cache.get(key)) == STATE
    raw_key = cache.make_key(key)
    assert raw_key.startswith("site:3:")
    assert 0 < state_cache.ttl(raw_key) <= LEDGER_CACHE_TIMEOUT


@pytest.mark.django_db(transaction=True)
def test_a_kept_client_write_honours_the_cache_timeout_setting(
    fs_queued, unique, state_cache
):
    storage = fs_queued(reference=f"kept-{unique}")
    key = caches["states"].make_key(storage.state.key("a.txt"))
    with override_settings(QUEUED_STORAGE_CACHE_TIMEOUT=None):
        with override_settings(QUEUED_STORAGE_LEDGER=False):
            storage.state.remember("a.txt", STATE)
            assert state_cache.ttl(key) == -1  # No expiry: the only copy.
    with override_settings(QUEUED_STORAGE_CACHE_TIMEOUT=30):
        storage.state.remember("a.txt", STATE)
        assert 0 < state_cache.ttl(key) <= 30
    with override_settings(QUEUED_STORAGE_CACHE_TIMEOUT=0):
        # As Django's cache.set() does with a timeout of 0: the key goes.
        storage.state.remember("a.txt", STATE)
        assert not state_cache.exists(key)


@pytest.mark.django_db(transaction=True)
def test_a_save_writes_where_the_cache_settings_point_now(fs_queued, unique, servers):
    storage = fs_queued(reference=f"kept-{unique}")
    first = redis.Redis.from_url(servers["redis"].url_for(6))
    second = redis.Redis.from_url(servers["redis"].url_for(7))
    for db, client in ((6, first), (7, second)):
        caches_setting = {**settings.CACHES, "states": redis_cache(servers, db)}
        with override_settings(CACHES=caches_setting, QUEUED_STORAGE_CACHE="states"):
            name = storage.save(f"moved-{db}.txt", ContentFile(b"x"))
            key = caches["states"].make_key(storage.state.key(name))
        assert client.exists(key)
    assert not first.exists(key)  # The second save went to the second database.


@pytest.mark.django_db(transaction=True)
def test_a_redis_cache_subclass_with_its_own_set_is_written_through_it(
    fs_queued, unique, servers
):
    cache = {**redis_cache(servers, 5), "BACKEND": f"{__name__}.CountingRedisCache"}
    written.clear()
    with override_settings(
        CACHES={**settings.CACHES, "states": cache}, QUEUED_STORAGE_CACHE="states"
    ):
        storage = fs_queued(reference=f"kept-{unique}")
        name = storage.save("counted.txt", ContentFile(b"x"))
        assert written == [storage.state.key(name)]
        assert storage.state.get(name).status == Status.PENDING


@pytest.mark.django_db(transaction=True)
def test_each_thread_writes_through_its_own_cache_and_client(
    fs_queued, unique, state_cache
):
    storage = fs_queued(reference=f"kept-{unique}")
    backends = []

    def write(name: str) -> None:
        storage.state.remember(name, STATE)
        backends.append(caches["states"]._cache)

    threads = [threading.Thread(target=write, args=(f"t{i}.txt",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len({id(backend) for backend in backends}) == 3
    keys = [caches["states"].make_key(storage.state.key(f"t{i}.txt")) for i in range(3)]
    assert state_cache.exists(*keys) == 3


# The name a save chooses --------------------------------------------------


class Reserving(QueuedStorage):
    """Refuses one name, as a project's own rule."""

    def is_name_available(self, name, max_length=None):
        return name != "reserved.txt" and super().is_name_available(name, max_length)


class Prefixing(QueuedStorage):
    """Chooses names its own way."""

    def get_available_name(self, name, max_length=None):
        return super().get_available_name(f"p-{name}", max_length)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("cls", "given", "expected"),
    [(Reserving, "reserved.txt", None), (Prefixing, "a.txt", "p-a.txt")],
    ids=["is_name_available", "get_available_name"],
)
def test_a_subclass_choosing_names_its_own_way_is_followed_by_save(
    tmp_path, cls, given, expected
):
    fs = "django.core.files.storage.FileSystemStorage"
    storage = cls(
        local=fs, remote=fs,
        local_options={"location": str(tmp_path / "local")},
        remote_options={"location": str(tmp_path / "remote")},
    )  # fmt: skip
    name = storage.save(given, ContentFile(b"x"))
    if expected is None:
        assert name != given and name.startswith("reserved_")
    else:
        assert name == expected
    assert storage.get_state(name).status == Status.PENDING


@pytest.mark.django_db(transaction=True)
def test_a_name_taken_locally_gets_another_and_a_free_one_is_kept(fs_queued, unique):
    storage = fs_queued(reference=f"names-{unique}")
    first = storage.save("dir/same.txt", ContentFile(b"1"))
    second = storage.save("dir/same.txt", ContentFile(b"2"))
    assert first == "dir/same.txt"
    assert second.startswith("dir/same_") and second.endswith(".txt")
    with storage.open(second) as opened:
        assert opened.read() == b"2"


@pytest.mark.django_db(transaction=True)
def test_with_the_remote_check_a_name_on_the_remote_only_is_not_reused(
    fs_queued, unique, tmp_path
):
    storage = fs_queued(reference=f"names-{unique}")
    storage.remote.save("remote-only.txt", ContentFile(b"r"))
    with override_settings(QUEUED_STORAGE_NAME_CHECK="remote"):
        name = storage.save("remote-only.txt", ContentFile(b"x"))
    assert name != "remote-only.txt"
    with override_settings(QUEUED_STORAGE_NAME_CHECK="state"):
        # The state check trusts the records: the transfer catches the rest.
        assert storage.save("remote-only.txt", ContentFile(b"y")) == "remote-only.txt"
