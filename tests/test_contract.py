"""Django's Storage contract where a queued storage used to break it."""

import http.server
import io
import os
import threading
import urllib.request

import pytest
from django.apps import apps
from django.core.checks import run_checks
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, InMemoryStorage
from django.db import connection, models
from django.utils.functional import LazyObject

from queued_storage import checks
from queued_storage.backends import QueuedStorage
from queued_storage.exceptions import InvalidFileName
from queued_storage.state import Status
from queued_storage.tasks import Transfer
from tests.conftest import wait_for

FS = "django.core.files.storage.FileSystemStorage"
MEMORY = "django.core.files.storage.InMemoryStorage"
TEXT = "héllo wörld"  # 11 characters, 13 bytes of UTF-8

pytestmark = pytest.mark.django_db(transaction=True)


class Unseekable(io.RawIOBase):
    """A stream that can only be read forward, as a socket's."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.fixture
def http_body():
    """Serve one body over HTTP on a free loopback port; yield its URL."""
    body = b"streamed over http " * 100

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()  # No Content-Length: the size is unknown.
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    server.protocol_version = "HTTP/1.0"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/file", body
    server.shutdown()
    server.server_close()


def memory_pair(**options):
    return QueuedStorage(local=MEMORY, remote=MEMORY, delayed=True, **options)


def move(storage, name):
    """Run the transfer of *name* in this process, as a worker would."""
    return Transfer().process(storage, name, storage.get_state(name).version)


# Non-seekable content ------------------------------------------------------


def test_save_of_a_stream_that_cannot_seek_records_the_bytes_written(fs_queued):
    storage = fs_queued(delayed=True)
    assert FileSystemStorage(location=str(storage.local.location) + "-alone").save(
        "alone.bin", Unseekable(b"0123456789")
    )
    name = storage.save("raw.bin", Unseekable(b"0123456789"))
    assert storage.get_state(name).size == 10
    assert storage.size(name) == 10
    assert move(storage, name) is True
    assert storage.get_state(name).status == Status.TRANSFERRED
    assert storage.size(name) == 10
    with storage.open(name) as handle:
        assert handle.read() == b"0123456789"


def test_save_of_an_http_response_succeeds(fs_queued, http_body):
    url, body = http_body
    storage = fs_queued(delayed=True)
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        name = storage.save("download.bin", response)
    assert storage.size(name) == len(body)
    assert storage.get_state(name).size == len(body)
    assert move(storage, name) is True
    with storage.remote.open(name) as handle:
        assert handle.read() == body


def test_save_that_cannot_record_its_state_leaves_no_local_file(fs_queued):
    from queued_storage.models import StoredFile

    storage = fs_queued(delayed=True)
    with connection.schema_editor() as editor:
        editor.delete_model(StoredFile)
    try:
        with pytest.raises(Exception, match="(?i)no such table|does not exist"):
            storage.save("orphan.txt", ContentFile(b"lost?"))
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(StoredFile)
    assert not storage.local.exists("orphan.txt")
    # The name check may fail before the local folder is even made.
    local_root = storage.local.location
    assert not os.path.isdir(local_root) or storage.local.listdir("") == ([], [])
    assert storage.get_state("orphan.txt") is None


# Sizes ---------------------------------------------------------------------


def test_size_is_the_stored_byte_count_before_and_after_the_transfer(fs_queued):
    storage = fs_queued(delayed=True)
    name = storage.save("text.txt", ContentFile(TEXT))
    assert storage.local.size(name) == 13
    assert storage.size(name) == 13
    assert storage.get_state(name).size == 13
    assert move(storage, name) is True
    assert storage.using_remote(name)
    assert storage.size(name) == storage.remote.size(name) == 13


def test_worker_refuses_a_local_copy_whose_size_changed(fs_queued):
    storage = fs_queued(delayed=True)
    name = storage.save("grown.txt", ContentFile(b"short"))
    # The local copy changed after the save: not the file that was saved.
    with open(storage.local.path(name), "wb") as handle:
        handle.write(b"rather longer now")
    assert storage.get_state(name).size == 5
    assert move(storage, name) is False
    state = storage.get_state(name)
    assert state.status == Status.FAILED and "LocalFileChanged" in state.error
    assert not storage.remote.exists(name)


def test_worker_records_the_size_it_uploaded_when_none_was_known(fs_queued):
    storage = fs_queued(delayed=True)
    name = storage.save("unknown.txt", ContentFile(b"seven b"))
    state = storage.get_state(name)
    # A local storage that could not tell the size at save time.
    storage.state.record(name, state.evolve(size=None))
    assert move(storage, name) is True
    assert storage.get_state(name).size == 7
    assert storage.size(name) == 7


def test_real_worker_records_the_byte_size(fs_queued, celery_worker):
    storage = fs_queued()
    name = storage.save("worker.txt", ContentFile(TEXT))
    wait_for(lambda: storage.using_remote(name))
    assert storage.size(name) == 13
    from queued_storage.models import StoredFile

    assert StoredFile.objects.get(storage=storage.reference, name=name).size == 13


# Directories ---------------------------------------------------------------


def test_delete_of_a_directory_in_memory_removes_the_files_below_it():
    storage = memory_pair()
    a = storage.save("dir/sub/a.txt", ContentFile(b"a"))
    b = storage.save("dir/sub/deeper/b.txt", ContentFile(b"b"))
    c = storage.save("dir/sub/c.txt", ContentFile(b"c"))
    assert move(storage, c) is True
    kept = storage.save("dir/other.txt", ContentFile(b"o"))
    assert storage.exists("dir/sub")

    storage.delete("dir/sub")

    for name in (a, b, c):
        assert not storage.exists(name)
        assert storage.get_state(name).status == Status.DELETED
        with pytest.raises(FileNotFoundError):
            storage.open(name)
    assert not storage.local.exists("dir/sub") and not storage.remote.exists("dir/sub")
    assert not storage.exists("dir/sub")
    assert storage.exists(kept)
    # The directory's name keeps no mark that hides what is saved below later.
    again = storage.save("dir/sub/new.txt", ContentFile(b"n"))
    assert storage.exists("dir/sub")
    assert storage.exists(again)
    assert storage.listdir("dir/sub") == ([], ["new.txt"])


def test_delete_of_a_directory_on_disk_removes_only_an_empty_one(fs_queued):
    storage = fs_queued(delayed=True)
    alone = FileSystemStorage(location=str(storage.local.location) + "-alone")
    alone.save("full/x.txt", ContentFile(b"x"))
    with pytest.raises(OSError) as expected:
        alone.delete("full")
    name = storage.save("full/x.txt", ContentFile(b"x"))
    with pytest.raises(type(expected.value)):
        storage.delete("full")
    assert storage.exists(name)
    assert storage.get_state(name).status == Status.PENDING

    storage.delete(name)
    assert storage.exists("full")  # The empty directory is left.
    storage.delete("full")
    assert not storage.local.exists("full")
    assert not storage.exists("full")
    again = storage.save("full/y.txt", ContentFile(b"y"))
    assert storage.exists("full") and storage.exists(again)


def test_delete_of_a_directory_whose_remote_removes_trees(tmp_path):
    storage = QueuedStorage(
        local=FS, remote=MEMORY, delayed=True,
        local_options={"location": str(tmp_path / "local")},
    )  # fmt: skip
    pending = storage.save("mixed/pending.txt", ContentFile(b"p"))
    moved = storage.save("mixed/moved.txt", ContentFile(b"m"))
    assert move(storage, moved) is True
    with pytest.raises(OSError):  # The local folder is not empty.
        storage.delete("mixed")
    # The remote tree is gone: the moved file went with it, entirely.
    assert not storage.exists(moved)
    assert not storage.local.exists(moved)
    assert storage.get_state(moved).status == Status.DELETED
    # The pending file is still served from its local copy.
    assert storage.exists(pending)
    with storage.open(pending) as handle:
        assert handle.read() == b"p"


def test_delete_of_a_file_placed_beside_the_storage_is_a_plain_delete(fs_queued):
    storage = fs_queued(delayed=True)
    storage.local.save("placed.txt", ContentFile(b"by hand"))
    storage.delete("placed.txt")
    assert not storage.local.exists("placed.txt")
    assert storage.get_state("placed.txt").status == Status.DELETED


# Lazy storages and the checks ------------------------------------------------


class Evaluations(LazyObject):
    """A lazy storage that counts, and refuses, being built."""

    built = 0

    def _setup(self):
        type(self).built += 1
        raise AssertionError("The lazy storage was built.")

    def __bool__(self):
        # Django 5.2's FileField tests ``storage or default_storage``, which
        # would build it before any check runs; Django 6 does not.
        return True


def test_checks_do_not_build_a_lazy_storage():
    lazy = Evaluations()

    class LazyUpload(models.Model):
        file = models.FileField(storage=lazy)

        class Meta:
            app_label = "testapp"

    try:
        listed = list(checks.queued_storages())
        messages = run_checks(databases=["default"])
    finally:
        del apps.all_models["testapp"]["lazyupload"]
        apps.clear_cache()
    assert Evaluations.built == 0
    assert all(not isinstance(s, LazyObject) for s in listed)
    assert [m for m in messages if m.id.startswith("queued_storage")] == []


def test_checks_see_a_queued_storage_that_a_built_lazy_object_wraps(fs_queued):
    storage = fs_queued(reference="lazy-queued", task="no.such.Task")

    class Built(LazyObject):
        def _setup(self):
            self._wrapped = storage

    lazy = Built()
    lazy.exists("anything")  # Builds it.

    class LazyQueued(models.Model):
        file = models.FileField(storage=lazy)

        class Meta:
            app_label = "testapp"

    try:
        assert storage in list(checks.queued_storages())
        found = [m.id for m in checks.check_storages()]
    finally:
        del apps.all_models["testapp"]["lazyqueued"]
        apps.clear_cache()
    assert found == ["queued_storage.E003"]


# Decisions -----------------------------------------------------------------


@pytest.mark.parametrize("name", [None, ""])
def test_delete_without_a_name_raises_what_django_storages_raise(fs_queued, name):
    storage = fs_queued(delayed=True)
    with pytest.raises(ValueError):
        FileSystemStorage(location=str(storage.local.location)).delete(name)
    with pytest.raises(ValueError) as raised:
        storage.delete(name)
    assert isinstance(raised.value, InvalidFileName)


def test_options_read_from_an_instance_are_the_ones_passed(tmp_path):
    local = {"location": str(tmp_path / "l")}
    remote = {"location": str(tmp_path / "r")}
    storage = QueuedStorage(
        local=FS, remote=FS, local_options=local, remote_options=remote,
        cache_prefix="mine",
    )  # fmt: skip
    assert storage.local_options == local
    assert storage.remote_options == remote
    assert storage.cache_prefix == "mine"
    assert storage.get_cache_key("a.txt").startswith("mine:")
    plain = QueuedStorage(local=FS, remote=FS)
    assert plain.local_options is None and plain.remote_options is None
    assert plain.cache_prefix is None


def test_in_memory_pair_keeps_the_storage_answers():
    storage = memory_pair()
    alone = InMemoryStorage()
    for target in (storage, alone):
        target.save("same.txt", ContentFile(TEXT))
    assert storage.size("same.txt") == alone.size("same.txt") == 13


def test_path_objects_are_names_as_for_django_storages(fs_queued):
    from pathlib import PurePosixPath

    storage = fs_queued(delayed=True)
    name = storage.save(PurePosixPath("p/one.txt"), ContentFile(b"1"))
    assert name == "p/one.txt"
    path = PurePosixPath(name)
    assert storage.exists(path)
    assert storage.size(path) == 1
    assert storage.path(path) == storage.local.path(name)
    with storage.open(path) as handle:
        assert handle.read() == b"1"
    storage.delete(path)
    assert not storage.exists(name)
    assert storage.get_state(name).status == Status.DELETED


class Suffixed(QueuedStorage):
    def get_valid_name(self, name):
        return super().get_valid_name(name) + "_valid"


def test_a_subclass_get_valid_name_decides_generated_names(tmp_path):
    storage = Suffixed(
        local=FS, remote=FS, delayed=True,
        local_options={"location": str(tmp_path / "l")},
        remote_options={"location": str(tmp_path / "r")},
    )  # fmt: skip
    assert storage.generate_filename("dir/some file") == "dir/some_file_valid"
    plain = QueuedStorage(local=FS, remote=FS)
    assert plain.generate_filename("dir/some file") == "dir/some_file"


def test_in_memory_pair_saves_a_stream_that_cannot_seek():
    storage = memory_pair()
    alone = InMemoryStorage()
    assert alone.save("raw.bin", Unseekable(b"0123456789")) == "raw.bin"
    name = storage.save("raw.bin", Unseekable(b"0123456789"))
    assert storage.size(name) == alone.size("raw.bin") == 10
    assert move(storage, name) is True
    assert storage.size(name) == storage.remote.size(name) == 10


def test_delete_of_a_directory_passes_over_files_it_has_no_state_for():
    storage = memory_pair()
    storage.local.save("tree/by-hand.txt", ContentFile(b"h"))
    saved = storage.save("tree/saved.txt", ContentFile(b"s"))
    storage.delete("tree")
    assert not storage.exists(saved)
    assert storage.get_state(saved).status == Status.DELETED
    assert storage.get_state("tree/by-hand.txt") is None
    assert not storage.local.exists("tree/by-hand.txt")


def test_delete_of_a_prefix_on_s3_keeps_the_files_below_it(tmp_path, unique):
    from queued_storage.backends import QueuedS3Storage

    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path / "l")},
        remote_options={"location": f"prefix-{unique}"}, delayed=True,
    )  # fmt: skip
    name = storage.save("pre/x.txt", ContentFile(b"x"))
    assert move(storage, name) is True
    storage.local.delete(name)  # Only the remote holds it now.
    storage.delete("pre")  # S3 has no directories: nothing is deleted.
    assert storage.remote.exists(name)
    assert storage.exists(name)
    assert storage.get_state(name).status == Status.TRANSFERRED
    with storage.open(name) as handle:
        assert handle.read() == b"x"
