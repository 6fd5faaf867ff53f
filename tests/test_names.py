"""Hostile file names are refused before anything is written, cached or queued."""

import os
import tempfile
from pathlib import Path

import pytest
from celery.exceptions import Reject
from django.core.cache import caches
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queued_storage import message
from queued_storage.backends import QueuedS3Storage, QueuedStorage
from queued_storage.exceptions import InvalidFileName
from queued_storage.names import validate_name
from queued_storage.tasks import Transfer
from queued_storage.transfer import transfer_file

FS = "django.core.files.storage.FileSystemStorage"
BUCKET = "queued-storage-tests"

BAD_NAMES = [
    "../x.txt",
    "a/../../x.txt",
    "a/./b.txt",
    "/etc/passwd",
    "C:/windows/x.txt",
    "..\\x.txt",
    "a\\b.txt",
    "",
    ".",
    "..",
    "dir/",
    "a//b.txt",
    "nul\x00byte.txt",
    "new\nline.txt",
    "tab\there.txt",
    "bell\x07.txt",
    "x" * 256,
    "é" * 513,
    ("d" * 200 + "/") * 6 + "f.txt",
]


@pytest.fixture
def roots(tmp_path):
    return tmp_path / "local", tmp_path / "remote"


@pytest.fixture
def storage(roots):
    local, remote = roots
    return QueuedStorage(
        local=FS,
        remote=FS,
        local_options={"location": str(local)},
        remote_options={"location": str(remote)},
    )


def all_files(path):
    return sorted(p for p in Path(path).rglob("*") if p.is_file())


@pytest.mark.parametrize("name", BAD_NAMES)
def test_validate_name_refuses(name):
    with pytest.raises(InvalidFileName, match="is not allowed"):
        validate_name(name)


def test_invalid_file_name_is_a_suspicious_operation():
    assert issubclass(InvalidFileName, SuspiciousFileOperation)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_raises_before_anything_is_written(storage, roots, tmp_path, name):
    cache_before = caches["default"].get_many([storage.get_cache_key(name)])
    with pytest.raises(SuspiciousFileOperation):
        storage.save(name, ContentFile(b"x"))
    assert all_files(tmp_path) == []
    assert caches["default"].get_many([storage.get_cache_key(name)]) == cache_before
    from queued_storage.models import StoredFile

    assert not StoredFile.objects.filter(storage=storage.reference).exists()
    for method in ("exists", "url", "delete", "size", "open", "get_available_name"):
        with pytest.raises(SuspiciousFileOperation):
            getattr(storage, method)(name)


@pytest.mark.django_db(transaction=True)
def test_name_over_the_s3_limit_with_its_location_is_refused(tmp_path):
    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path)},
        remote_options={"location": "p" * 100},
    )
    fits = "/".join(["n" * 200] * 4) + "/" + "n" * (1024 - 101 - 804)
    assert len(fits.encode()) == 1024 - 101
    assert validate_name(fits) == fits
    storage.validate_name(fits)
    with pytest.raises(InvalidFileName, match="over 923"):
        storage.validate_name(fits + "n")


@pytest.mark.django_db(transaction=True)
def test_s3_key_is_exactly_the_validated_name(tmp_path, s3_client, unique):
    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path)}, remote_options={"location": unique}
    )
    name = "dir with space/ünïcode (1).txt"
    saved = storage.save(name, ContentFile(b"x"))
    assert saved == name
    transfer_file(saved, storage.local, storage.remote)
    keys = [
        o["Key"]
        for o in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=unique)["Contents"]
    ]
    assert keys == [f"{unique}/{name}"]


def test_worker_validates_the_name_again():
    from celery.exceptions import Reject

    from queued_storage.tasks import Transfer
    from tests.testapp.models import Document

    storage = Document._meta.get_field("file").storage
    kwargs = message.sign(Transfer.name, storage.reference, "../../etc/passwd", "v")
    with pytest.raises(Reject, match="not allowed"):
        Transfer().run(**kwargs)


def test_uploads_get_the_configured_permissions_whatever_the_umask(storage, roots):
    old = os.umask(0o077)
    try:
        with override_settings(
            FILE_UPLOAD_PERMISSIONS=0o640, FILE_UPLOAD_DIRECTORY_PERMISSIONS=0o750
        ):
            fresh = QueuedStorage(
                local=FS,
                remote=FS,
                local_options={"location": str(roots[0])},
                remote_options={"location": str(roots[1])},
            )
            name = fresh.local.save("deep/dir/file.txt", ContentFile(b"x"))
            path = Path(fresh.local.path(name))
            assert path.stat().st_mode & 0o777 == 0o640
            assert path.parent.stat().st_mode & 0o777 == 0o750
    finally:
        os.umask(old)


segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40
)
names = st.lists(segment, min_size=1, max_size=4).map("/".join) | st.text(max_size=60)


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(name=names)
def test_generated_names_stay_inside_the_roots_and_round_trip(name):
    work = Path(tempfile.mkdtemp(prefix="qs-names-"))
    local, remote = work / "local", work / "remote"
    storage = QueuedStorage(
        local=FS,
        remote=FS,
        delayed=True,
        local_options={"location": str(local)},
        remote_options={"location": str(remote)},
    )
    try:
        stored = validate_name(name)  # The NFC form of the name.
    except InvalidFileName:
        accepted = False
    else:
        accepted = True
    for call in (storage.exists, storage.url, storage.get_available_name):
        try:
            call(name)
        except SuspiciousFileOperation:
            assert not accepted
    if not accepted:
        # A signed message with the name is refused by the task too.
        with pytest.raises(Reject):
            Transfer().run(**message.sign(Transfer.name, storage.reference, name, "v"))
    try:
        saved = storage.save(name, ContentFile(b"data"))
    except SuspiciousFileOperation:
        assert not accepted
        assert all_files(work) == []
        return
    except OSError:
        # The file system refused a name the rules allow (e.g. a too long path).
        assert all_files(work) == []
        return
    assert accepted
    assert saved == stored
    version = storage.get_state(saved).version
    assert version
    assert Transfer().run(
        **message.sign(Transfer.name, storage.reference, saved, version)
    )
    assert storage.using_remote(saved)
    files = all_files(work)
    assert files == sorted([local / stored, remote / stored])
    assert (remote / stored).read_bytes() == b"data"
    storage.delete(saved)
    assert all_files(work) == []
