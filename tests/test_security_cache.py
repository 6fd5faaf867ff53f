"""Whoever can write to the state cache cannot run code or crash a reader.

Entries are written with raw Redis and memcached clients, as another client
of the same server would, under the real keys of real states.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import pytest
from django.core.cache import caches
from django.core.files.base import ContentFile
from django.test import override_settings

from queued_storage import checks
from queued_storage.serializers import JSONSerde, JSONSerializer, json_serde
from queued_storage.state import FileState, Status
from queued_storage.tasks import Transfer
from tests.conftest import wait_for

db = pytest.mark.django_db

JSON_REDIS = "queued_storage.serializers.JSONSerializer"


class CreatesFile:
    """A pickle that creates a file (a folder) at *path* when it is loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (os.mkdir, (self.path,))


def read(storage: Any, name: str) -> bytes:
    with storage.open(name) as handle:
        return bytes(handle.read())


def raw_redis(servers: dict[str, Any]) -> Any:
    import redis

    return redis.Redis.from_url(servers["redis"].url_for(1))


def raw_memcached(servers: dict[str, Any]) -> Any:
    from pymemcache.client.base import Client

    host, port = servers["memcached"].location.rsplit(":", 1)
    return Client((host, int(port)))


def write_raw(servers, alias: str, key: str, payload: bytes, flags: int = 1) -> None:
    """Write *payload* under the cache key *key* of *alias*, bypassing Django."""
    full = caches[alias].make_and_validate_key(key)
    client = raw_memcached(servers) if alias == "memcached" else raw_redis(servers)
    try:
        if alias == "memcached":
            client.set(full, payload, flags=flags)
        else:
            client.set(full, payload)
    finally:
        client.close()


@pytest.fixture(params=["default", "memcached"])
def alias(request):
    """The state cache: Redis, then memcached, each with its JSON serializer."""
    with override_settings(QUEUED_STORAGE_CACHE=request.param):
        yield request.param


@db
def test_pickled_state_entry_is_not_executed(alias, fs_queued, servers, tmp_path):
    storage = fs_queued(delayed=True)
    name = storage.save("victim.txt", ContentFile(b"bytes"))
    recorded = storage.get_state(name)
    bait = tmp_path / "pwned"
    write_raw(
        servers,
        alias,
        storage.get_cache_key(name),
        pickle.dumps(CreatesFile(str(bait))),
    )

    # The web process: every read asks the cache first.
    assert storage.exists(name)
    assert storage.get_state(name) == recorded  # The ledger answered.
    assert storage.url(name).endswith("victim.txt")
    # The worker, which reads the state before it transfers.
    write_raw(
        servers,
        alias,
        storage.get_cache_key(name),
        pickle.dumps(CreatesFile(str(bait))),
    )
    assert Transfer().process(storage, name, recorded.version) is True
    assert storage.remote.exists(name)
    assert not bait.exists()


@db
def test_pickled_state_entry_reads_as_a_miss_in_get_many(
    alias, fs_queued, servers, tmp_path
):
    storage = fs_queued(delayed=True)
    names = [storage.save(f"many-{i}.txt", ContentFile(b"x")) for i in range(3)]
    bait = tmp_path / "pwned"
    write_raw(
        servers,
        alias,
        storage.get_cache_key(names[1]),
        pickle.dumps(CreatesFile(str(bait))),
    )
    states = storage.state.get_many(names)
    assert all(
        state is not None and state.status == Status.PENDING
        for state in states.values()
    )
    assert not bait.exists()


@db
def test_pickling_state_cache_runs_a_written_payload(fs_queued, servers, tmp_path):
    """What the JSON serializer prevents, and what check W010 warns about."""
    pickling = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": servers["redis"].url_for(1),
    }
    caches_setting = {**_caches(), "pickling": pickling}
    with override_settings(CACHES=caches_setting, QUEUED_STORAGE_CACHE="pickling"):
        assert [m.id for m in checks.check_cache_serializer()] == [
            "queued_storage.W010"
        ]
        storage = fs_queued(delayed=True)
        name = storage.save("victim.txt", ContentFile(b"bytes"))
        bait = tmp_path / "pwned"
        write_raw(
            servers,
            "pickling",
            storage.get_cache_key(name),
            pickle.dumps(CreatesFile(str(bait))),
        )
        storage.exists(name)
    assert bait.exists()


def _caches() -> dict[str, Any]:
    from django.conf import settings

    return dict(settings.CACHES)


MALFORMED = [
    "abcdef",
    ["pending", "v", 1, 0, "", ""][:5],
    ["pending", "v", 1, 0, "", "", "x"],
    ["transferred", "v", 1, 0, "", "", 1700000000],
    ["transferred", "v", 1, 0, "", "", "2026-01-01T00:00:00+00:00" + "0" * 20],
    ["transferred", "v", 1, 0, "", "", "yesterday"],
    ["transferred", "v", 1, 0, "", "", "2026-01-01T00:00:00"],
    ["pending", "v", 1, 0, "", "", None, None],
    ["pending", "v", "big", 0, "", ""],
    ["pending", "v", 1, "many", "", ""],
    ["pending", "v", 1, -1, "", ""],
    ["pending", "v", -5, 0, "", ""],
    ["pending", "v", 1, 2**40, "", ""],
    ["pending", "v", True, 0, "", ""],
    ["pending", ["v"], 1, 0, "", ""],
    ["pending", "v", 1, 0, None, ""],
    ["pending", "v", 1, 0, "", 7],
    ["exploded", "v", 1, 0, "", ""],
    [["transferred"], "v", 1, 0, "", ""],
    ["pending", "v" * 33, 1, 0, "", ""],
    [1, 2, 3, 4, 5, 6],
    {"status": "transferred"},
    42,
    None,
    "",
]


@db
@pytest.mark.parametrize("entry", MALFORMED, ids=repr)
def test_malformed_state_entry_is_a_miss_never_a_crash(alias, fs_queued, entry):
    storage = fs_queued(delayed=True)
    name = storage.save("shape.txt", ContentFile(b"bytes"))
    recorded = storage.get_state(name)
    key = storage.get_cache_key(name)
    assert FileState.from_cache(entry) is None
    caches[alias].set(key, entry)
    assert storage.exists(name)
    assert storage.get_states([name]) == {name: recorded}
    caches[alias].set(key, entry)
    assert Transfer().process(storage, name, recorded.version) is True
    assert storage.get_state(name).status == Status.TRANSFERRED


@pytest.mark.parametrize(
    "payload",
    [
        b"abcdef",
        b"\x80\x05garbage",
        b"[" * 100_000,
        b"\xff\xfe",
        b'["pending"',
        pickle.dumps(("transferred", "v", 1, 0, "", "")),
    ],
    ids=["text", "cut-pickle", "deep-nesting", "not-utf8", "cut-json", "old-pickle"],
)
@db
def test_unparseable_state_entry_is_a_miss(alias, fs_queued, servers, payload):
    storage = fs_queued(delayed=True)
    name = storage.save("garbage.txt", ContentFile(b"bytes"))
    recorded = storage.get_state(name)
    write_raw(servers, alias, storage.get_cache_key(name), payload, flags=16)
    assert storage.get_state(name) == recorded


@db
def test_malformed_entry_without_the_ledger_is_a_miss(alias, fs_queued):
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        storage = fs_queued(delayed=True)
        name = storage.save("no-ledger.txt", ContentFile(b"bytes"))
        caches[alias].set(storage.get_cache_key(name), ["pending", "v", "x", 0, "", ""])
        # A miss: the storages are probed, and the local copy is found.
        assert storage.get_state(name) == FileState(Status.PENDING)
        assert storage.exists(name)
        assert not storage.state.in_use("other.txt")


@pytest.mark.django_db(transaction=True)
def test_real_worker_transfers_past_a_pickled_entry(
    celery_worker, servers, tmp_path, s3_client
):
    from tests.testapp.models import s3_delayed_storage as storage

    name = storage.save(f"poisoned-{tmp_path.name}.txt", ContentFile(b"bytes"))
    version = storage.get_state(name).version
    bait = tmp_path / "pwned"
    write_raw(
        servers,
        "default",
        storage.get_cache_key(name),
        pickle.dumps(CreatesFile(str(bait))),
    )
    storage.enqueue(name, version)
    wait_for(lambda: storage.state.get(name).is_remote)
    assert read(storage.remote, name) == b"bytes"
    assert not bait.exists()


@db
def test_transfer_time_survives_a_json_cache_and_old_entries_read_without_it(
    alias, fs_queued
):
    storage = fs_queued(delayed=True)
    name = storage.save("timed.txt", ContentFile(b"bytes"))
    storage.transfer(name, now=True)
    done = storage.state.get(name, durable=True)
    assert done.is_remote and done.transferred_at is not None
    key = storage.get_cache_key(name)
    assert FileState.from_cache(caches[alias].get(key)) == done
    # An entry of six items, as written before the transfer time was kept.
    caches[alias].set(key, list(done.to_cache())[:6])
    assert storage.get_state(name) == done.evolve(transferred_at=None)


def test_json_serializers_keep_whole_numbers_for_incr(alias):
    cache = caches[alias]
    cache.set("qs-counter", 41)
    assert cache.incr("qs-counter") == 42
    assert cache.get("qs-counter") == 42
    cache.set("qs-state", FileState(Status.PENDING, "v", 3).to_cache())
    assert FileState.from_cache(cache.get("qs-state")) == FileState(
        Status.PENDING, "v", 3
    )
    cache.delete_many(["qs-counter", "qs-state"])


def test_json_serializers_refuse_values_json_cannot_hold():
    import datetime

    with pytest.raises(TypeError):
        JSONSerializer().dumps(datetime.date.today())
    with pytest.raises(TypeError):
        json_serde.serialize("k", object())


# The check of the state cache's serializer --------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"BACKEND": "django.core.cache.backends.redis.RedisCache"},
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "OPTIONS": {
                "serializer": "django.core.cache.backends.redis.RedisSerializer"
            },
        },
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "OPTIONS": {"serializer": "no.such.Serializer"},
        },
        {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache"},
        {"BACKEND": "django.core.cache.backends.memcached.PyLibMCCache"},
        {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache"},
        {"BACKEND": "django.core.cache.backends.db.DatabaseCache"},
        {"BACKEND": "some.custom.Cache"},
    ],
    ids=[
        "redis",
        "redis-pickle",
        "redis-unknown",
        "pymemcache",
        "pylibmc",
        "file",
        "db",
        "custom",
    ],
)
def test_check_warns_when_the_state_cache_can_unpickle(params):
    with override_settings(CACHES={"default": params}):
        messages = checks.check_cache_serializer()
    assert [m.id for m in messages] == ["queued_storage.W010"]
    assert "run code" in messages[0].msg
    assert "JSONSerializer" in messages[0].hint


@pytest.mark.parametrize(
    "params",
    [
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "OPTIONS": {"serializer": JSON_REDIS},
        },
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "OPTIONS": {"serializer": JSONSerializer},
        },
        {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "OPTIONS": {"serde": json_serde},
        },
        {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "OPTIONS": {"serde": JSONSerde()},
        },
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    ],
    ids=["redis-path", "redis-class", "pymemcache", "pymemcache-instance", "locmem"],
)
def test_check_is_silent_when_the_state_cache_cannot_unpickle(params):
    with override_settings(CACHES={"default": params}):
        assert checks.check_cache_serializer() == []


def test_check_looks_at_the_state_cache_alias_only():
    pickling = {"BACKEND": "django.core.cache.backends.redis.RedisCache"}
    safe = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "OPTIONS": {"serializer": JSON_REDIS},
    }
    with override_settings(
        CACHES={"default": pickling, "states": safe}, QUEUED_STORAGE_CACHE="states"
    ):
        assert checks.check_cache_serializer() == []
    with override_settings(
        CACHES={"default": safe, "states": pickling}, QUEUED_STORAGE_CACHE="states"
    ):
        assert [m.id for m in checks.check_cache_serializer()] == [
            "queued_storage.W010"
        ]


# What a writer of a JSON state cache can and cannot do --------------------


def forged(kind: str, version: str) -> list[Any]:
    return {
        "tombstone": ["deleted", "", None, 0, "", ""],
        "transferred": ["transferred", version, 5, 0, "", ""],
        "other-version": ["pending", "f" * 16, 5, 0, "", ""],
        "other-size": ["pending", version, 999, 77, "forged", "text/html"],
        "failed": ["failed", version, 5, 0, "forged", ""],
    }[kind]


@db
@pytest.mark.parametrize(
    "kind", ["tombstone", "transferred", "other-version", "other-size", "failed"]
)
def test_forged_state_entry_does_not_steer_the_worker(alias, fs_queued, kind):
    from queued_storage.models import StoredFile

    storage = fs_queued(delayed=True)
    content = ContentFile(b"bytes", name="steer.txt")
    content.content_type = "text/plain"
    name = storage.save("steer.txt", content)
    version = storage.get_state(name).version
    caches[alias].set(storage.get_cache_key(name), forged(kind, version))

    assert Transfer().process(storage, name, version) is True
    assert read(storage.remote, name) == b"bytes"
    row = StoredFile.objects.get(storage=storage.reference, name=name)
    assert (row.status, row.version, row.size, row.attempts, row.last_error) == (
        Status.TRANSFERRED,
        version,
        5,
        1,
        "",
    )
    # The worker's outcome replaced the forged entry.
    assert storage.get_state(name) == FileState.from_row(row)


@db
def test_forged_state_entry_changes_where_reads_go(alias, fs_queued):
    """What a writer of a JSON cache can still do: steer reads, until expiry."""
    storage = fs_queued(delayed=True)
    name = storage.save("steered.txt", ContentFile(b"bytes"))
    version = storage.get_state(name).version
    key = storage.get_cache_key(name)
    caches[alias].set(key, ["transferred", version, 12345, 0, "", ""])
    assert storage.using_remote(name)
    assert storage.url(name) == storage.remote.url(name)
    assert storage.size(name) == 12345
    caches[alias].set(key, forged("tombstone", ""))
    assert not storage.exists(name)
    # A transferred file forged back to pending is served locally again.
    caches[alias].delete(key)
    assert Transfer().process(storage, name, version)
    assert storage.using_remote(name)
    caches[alias].set(key, ["pending", version, 5, 0, "", ""])
    assert storage.using_local(name)
    # The ledger, which the worker reads, still knows the truth.
    assert storage.state.get(name, durable=True).is_remote


@db
def test_forged_entry_without_the_ledger_makes_the_worker_skip(alias, fs_queued):
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        storage = fs_queued(delayed=True)
        name = storage.save("skipped.txt", ContentFile(b"bytes"))
        version = storage.get_state(name).version
        caches[alias].set(storage.get_cache_key(name), forged("tombstone", ""))
        assert Transfer().process(storage, name, version) is False
        assert not storage.remote.exists(name)
        assert storage.local.exists(name)


def test_check_connects_to_nothing():
    """The check decides from the settings; the cache server is not asked."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        params = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/1",
        }
        with override_settings(CACHES={"default": params}):
            assert [m.id for m in checks.check_cache_serializer()] == [
                "queued_storage.W010"
            ]
        with pytest.raises(BlockingIOError):
            server.accept()


@db
@pytest.mark.parametrize("kind", ["failed", "tombstone", "other-version"])
def test_forged_state_entry_does_not_reach_the_ledger_through_transfer(
    alias, fs_queued, kind
):
    """transfer(), behind retry, decides from the ledger, not the cache."""
    from queued_storage.models import StoredFile

    storage = fs_queued(delayed=True)
    name = storage.save("retried.txt", ContentFile(b"bytes"))
    version = storage.get_state(name).version
    assert Transfer().process(storage, name, version)
    caches[alias].set(storage.get_cache_key(name), forged(kind, version))
    assert storage.transfer(name) is None  # Transferred: nothing to do.
    row = StoredFile.objects.get(storage=storage.reference, name=name)
    assert (row.status, row.version) == (Status.TRANSFERRED, version)


def test_json_serializer_reads_numbers_as_they_come_and_anything_else_as_nothing():
    serializer = JSONSerializer()
    assert serializer.loads(42) == 42
    assert serializer.loads(memoryview(b'{"a": 1}')) == {"a": 1}
    assert serializer.loads(None) is None
    assert serializer.loads(True) is None
    assert serializer.loads(3.5) is None
