"""The storage proxy: names, states, reads and deletes, against real services."""

import warnings

import pytest
from django.core.cache import CacheKeyWarning, caches
from django.core.files.base import ContentFile
from django.test import override_settings

from queued_storage.backends import QueuedS3Storage, QueuedStorage
from queued_storage.state import FileState, Status

FS = "django.core.files.storage.FileSystemStorage"
BUCKET = "queued-storage-tests"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def storage(tmp_path, unique):
    """A delayed S3 pair, so that nothing moves unless a test asks."""
    return QueuedS3Storage(
        local_options={"location": str(tmp_path / "local"), "base_url": "/local/"},
        remote_options={"location": f"t-{unique}"},
        delayed=True,
    )


@pytest.fixture
def fs_storage(tmp_path):
    return QueuedStorage(
        local=FS,
        remote=FS,
        local_options={"location": str(tmp_path / "local"), "base_url": "/local/"},
        remote_options={"location": str(tmp_path / "remote"), "base_url": "/remote/"},
        delayed=True,
    )


def remote_keys(s3_client, prefix):
    listing = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", ()))


def test_save_writes_locally_and_records_pending_state(storage):
    name = storage.save("a.txt", ContentFile(b"abc"))
    assert name == "a.txt"
    assert storage.local.exists(name)
    state = storage.get_state(name)
    assert state.status == Status.PENDING
    assert state.size == 3
    assert len(state.version) == 16
    assert storage.using_local(name)
    assert storage.url(name) == "/local/a.txt"


def test_state_is_recorded_under_the_name_actually_saved(storage):
    first = storage.save("same.txt", ContentFile(b"one"))
    second = storage.save("same.txt", ContentFile(b"two"))
    assert first == "same.txt"
    assert second != first and second.startswith("same_") and second.endswith(".txt")
    assert storage.get_state(second).size == 3
    assert storage.get_state(first).version != storage.get_state(second).version
    with storage.open(second) as handle:
        assert handle.read() == b"two"


@override_settings(QUEUED_STORAGE_NAME_CHECK="remote")
def test_available_name_is_free_on_the_remote_too(storage, s3_client, unique):
    s3_client.put_object(Bucket=BUCKET, Key=f"t-{unique}/taken.txt", Body=b"x")
    assert not storage.local.exists("taken.txt")
    name = storage.get_available_name("taken.txt")
    assert name != "taken.txt"
    assert storage.save("taken.txt", ContentFile(b"y")) not in ("taken.txt", name)


def test_by_default_the_name_check_asks_the_remote_only_without_the_ledger(
    storage, s3_client, unique
):
    s3_client.put_object(Bucket=BUCKET, Key=f"t-{unique}/foreign.txt", Body=b"x")
    assert storage.name_check() == "state"
    assert storage.get_available_name("foreign.txt") == "foreign.txt"
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        assert storage.name_check() == "remote"
        assert storage.get_available_name("foreign.txt") != "foreign.txt"


def test_state_check_mode_asks_no_remote(storage, s3_client, unique):
    s3_client.put_object(Bucket=BUCKET, Key=f"t-{unique}/foreign.txt", Body=b"x")
    with override_settings(QUEUED_STORAGE_NAME_CHECK="state"):
        assert storage.get_available_name("foreign.txt") == "foreign.txt"
        storage.save("mine.txt", ContentFile(b"1"))
        assert storage.get_available_name("mine.txt") != "mine.txt"


@pytest.mark.parametrize(
    "name",
    [
        "x" * 1000,
        "dir with spaces/file name.txt",
        "dir\nwith\nnewlines/file.txt",
        "répertoire/фото 写真.jpg",
        ":" * 300,
    ],
)
def test_cache_keys_are_valid_for_memcached(storage, name):
    key = storage.get_cache_key(name)
    memcached = caches["memcached"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)
        memcached.set(key, FileState(Status.PENDING, "v").to_cache())
        assert FileState.from_cache(memcached.get(key)).version == "v"
    assert len(key) < 250


def test_cache_keys_never_collide(storage, fs_storage):
    names = ["a", "a ", "a\n", "A", "a/b", "a_b", "é", "e\u0301", "x" * 999, "x" * 1000]
    keys = {storage.get_cache_key(name) for name in names}
    assert len(keys) == len(names)
    # The same name in two storages has two keys.
    assert storage.get_cache_key("a") != fs_storage.get_cache_key("a")


def test_state_entries_expire_after_a_day_by_default_with_the_ledger(storage, servers):
    import redis

    name = storage.save("daily.txt", ContentFile(b"x"))
    cache = caches["default"]
    client = redis.Redis.from_url(servers["redis"].url_for(1))
    ttl = client.ttl(cache.make_and_validate_key(storage.get_cache_key(name)))
    assert 24 * 3600 - 60 < ttl <= 24 * 3600
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        name = storage.save("forever.txt", ContentFile(b"x"))
    assert client.ttl(cache.make_and_validate_key(storage.get_cache_key(name))) == -1
    with override_settings(QUEUED_STORAGE_CACHE_TIMEOUT=50):
        storage.save("brief.txt", ContentFile(b"x"))
    ttl = client.ttl(cache.make_and_validate_key(storage.get_cache_key("brief.txt")))
    assert 0 < ttl <= 50


def test_cache_miss_is_answered_by_the_ledger(storage):
    name = storage.save("ledger.txt", ContentFile(b"x"))
    version = storage.get_state(name).version
    caches["default"].clear()
    storage.local.delete(name)  # Were the storages probed, it would look gone.
    assert storage.get_state(name) == FileState(Status.PENDING, version, 1)
    assert caches["default"].get(storage.get_cache_key(name)) is not None


def test_cache_miss_without_ledger_probes_once_and_remembers(
    storage, s3_client, unique
):
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        key = f"t-{unique}/elsewhere.txt"
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=b"remote")
        assert storage.exists("elsewhere.txt")
        assert storage.using_remote("elsewhere.txt")
        # The remote is not asked again: the state was remembered.
        s3_client.delete_object(Bucket=BUCKET, Key=key)
        assert storage.using_remote("elsewhere.txt")
        assert storage.url("elsewhere.txt").endswith(key)


def test_unknown_name_does_not_exist(storage):
    assert not storage.exists("never-saved.txt")
    assert storage.get_state("never-saved.txt") is None


def test_delete_removes_both_copies_and_marks_deleted(storage, s3_client, unique):
    name = storage.save("both.txt", ContentFile(b"x"))
    storage.remote.save(name, ContentFile(b"x"))
    storage.delete(name)
    assert not storage.local.exists(name)
    assert remote_keys(s3_client, f"t-{unique}/") == []
    assert storage.get_state(name).status == Status.DELETED
    assert not storage.exists(name)


def test_reads_follow_the_state(fs_storage):
    name = fs_storage.save("doc.txt", ContentFile(b"local bytes"))
    fs_storage.remote.save(name, ContentFile(b"remote bytes!"))
    assert fs_storage.size(name) == 11
    assert fs_storage.path(name) == fs_storage.local.path(name)
    assert fs_storage.get_modified_time(name) == fs_storage.local.get_modified_time(
        name
    )
    state = fs_storage.get_state(name)
    assert fs_storage.state.compare_and_set(
        name, state.version, state.evolve(status=Status.TRANSFERRED, size=13)
    )
    assert fs_storage.using_remote(name)
    assert fs_storage.url(name) == "/remote/doc.txt"
    assert fs_storage.size(name) == 13
    assert fs_storage.path(name) == fs_storage.remote.path(name)
    for method in ("get_accessed_time", "get_created_time", "get_modified_time"):
        assert getattr(fs_storage, method)(name) == getattr(fs_storage.remote, method)(
            name
        )
    with fs_storage.open(name) as handle:
        assert handle.read() == b"remote bytes!"


def test_listdir_merges_both_storages(fs_storage):
    fs_storage.save("d/one.txt", ContentFile(b"1"))
    fs_storage.remote.save("d/two.txt", ContentFile(b"2"))
    fs_storage.remote.save("d/one.txt", ContentFile(b"1"))
    fs_storage.local.save("d/sub/three.txt", ContentFile(b"3"))
    dirs, files = fs_storage.listdir("d")
    assert sorted(files) == ["one.txt", "two.txt"]
    assert dirs == ["sub"]


def test_urls_resolves_many_states_at_once(fs_storage):
    names = [fs_storage.save(f"u{i}.txt", ContentFile(b"x")) for i in range(5)]
    state = fs_storage.get_state(names[0])
    fs_storage.state.compare_and_set(
        names[0], state.version, state.evolve(status=Status.TRANSFERRED)
    )
    urls = fs_storage.urls(names)
    assert urls[names[0]] == "/remote/u0.txt"
    assert [urls[n] for n in names[1:]] == [f"/local/u{i}.txt" for i in range(1, 5)]


def test_generate_filename_uses_the_local_rules(storage):
    assert storage.generate_filename("dir/some file?.txt") == "dir/some_file.txt"
    assert storage.get_valid_name("a b.txt") == "a_b.txt"


def test_save_respects_max_length(storage):
    storage.save("abcdefgh.txt", ContentFile(b"1"))
    name = storage.save("abcdefgh.txt", ContentFile(b"2"), max_length=14)
    assert len(name) <= 14


def test_transfer_of_a_remote_file_sends_nothing(fs_storage):
    name = fs_storage.save("done.txt", ContentFile(b"x"))
    state = fs_storage.get_state(name)
    fs_storage.state.compare_and_set(
        name, state.version, state.evolve(status=Status.TRANSFERRED)
    )
    assert fs_storage.transfer(name) is None
    with pytest.raises(FileNotFoundError):
        fs_storage.transfer("missing.txt")


def test_queued_storage_as_the_default_storage(tmp_path):
    from django.core.files.storage import default_storage, storages

    queued_default = {
        "BACKEND": "queued_storage.backends.QueuedStorage",
        "OPTIONS": {
            "local": FS,
            "remote": "remote_s3",
            "local_options": {"location": str(tmp_path)},
            "delayed": True,
        },
    }
    with override_settings(STORAGES={**storages.backends, "default": queued_default}):
        name = default_storage.save("by-default.txt", ContentFile(b"x"))
        assert isinstance(storages["default"], QueuedStorage)
        assert storages["default"].reference == "default"
        assert default_storage.get_state(name).status == Status.PENDING
        assert (tmp_path / name).read_bytes() == b"x"


@pytest.mark.parametrize(
    ("declared", "kept"),
    [
        ("image/png", "image/png"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ("image/" + "x" * 300, ""),
        ("not a type", ""),
        ("text/html\r\nX-Evil: 1", ""),
    ],
)
def test_declared_content_type_is_recorded_only_when_sane(storage, declared, kept):
    from django.core.files.uploadedfile import SimpleUploadedFile

    name = storage.save("typed.bin", SimpleUploadedFile("typed.bin", b"x", declared))
    assert storage.get_state(name).content_type == kept


def test_transfer_goes_to_the_queue_of_the_host_that_wrote_the_file(storage, servers):
    import redis

    from queued_storage.models import StoredFile

    with override_settings(QUEUED_STORAGE_PER_HOST_QUEUE=True):
        name = storage.save("hosted.txt", ContentFile(b"x"))
        StoredFile.objects.filter(name=name).update(host="web-7", status="failed")
        storage.state.cache.clear()
        broker = redis.Redis.from_url(servers["redis"].url_for(0))
        before = broker.llen("queued_storage.web-7")
        assert storage.transfer(name) is not None
        assert broker.llen("queued_storage.web-7") == before + 1
        assert StoredFile.objects.get(name=name).host == "web-7"
        broker.delete("queued_storage.web-7")
