"""A forged, altered or expired task message is rejected with nothing touched."""

import logging
import sys
import time

import pytest
from django.core.files.base import ContentFile
from django.test import override_settings

from queued_storage import message
from queued_storage.backends import QueuedS3Storage
from queued_storage.exceptions import InvalidMessage
from queued_storage.state import Status
from tests.conftest import wait_for
from tests.testapp.models import Deferred, Document

BUCKET = "queued-storage-tests"
TASK = "queued_storage.tasks.Transfer"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bait(tmp_path, monkeypatch):
    """A module on sys.path that leaves a trace if anything imports it."""
    trace = tmp_path / "imported"
    (tmp_path / "qs_bait.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(trace)!r}).write_text('imported')\n"
        "class Storage:\n"
        "    def __init__(self, **options):\n"
        f"        pathlib.Path({str(trace)!r}).write_text('built')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield trace
    sys.modules.pop("qs_bait", None)


def drain(celery_app, unique):
    """Wait until the worker has handled every message sent before this call."""
    doc = Document.objects.create(
        file=ContentFile(b"marker", name=f"mark-{unique}.txt")
    )
    wait_for(lambda: doc.file.storage.using_remote(doc.file.name))


def s3_has(s3_client, key):
    return "Contents" in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=key)


def test_forged_messages_import_nothing(
    celery_worker, celery_app, bait, unique, caplog
):
    forged = [
        # The original app's message: paths and options to import and build.
        {"args": ["x.txt", "key", "qs_bait.Storage", "qs_bait.Storage", {}, {}]},
        {"kwargs": {"name": "x.txt", "local": "qs_bait.Storage", "remote": "x"}},
        {
            "kwargs": {
                "storage": "qs_bait.Storage",
                "name": "x.txt",
                "version": "1",
                "signature": "forged",
            }
        },
        {"kwargs": message.sign(TASK, "qs_bait.Storage", "x.txt", "1")},
    ]
    with caplog.at_level(logging.ERROR, logger="queued_storage"):
        for fields in forged:
            celery_app.send_task(TASK, **fields)
        drain(celery_app, unique)
    assert "qs_bait" not in sys.modules
    assert not bait.exists()
    rejected = [
        r for r in caplog.records if "Rejected a transfer message" in r.getMessage()
    ]
    # Messages of another shape too are refused by the task, not by a
    # TypeError naming their arguments.
    assert len(rejected) == len(forged)
    # A signature made with another SECRET_KEY: say how projects sharing a
    # broker database keep their messages apart.
    assert all("QUEUED_STORAGE_QUEUE" in r.getMessage() for r in rejected)


@pytest.fixture
def pending(unique):
    """A delayed file, saved locally and never sent: (storage, name, version)."""
    item = Deferred.objects.create(file=ContentFile(b"secret", name=f"{unique}.txt"))
    storage = item.file.storage
    return storage, item.file.name, storage.get_state(item.file.name).version


def assert_untouched(storage, name, version, s3_client):
    state = storage.get_state(name)
    assert (state.status, state.version, state.attempts) == (Status.PENDING, version, 0)
    assert storage.local.exists(name)
    assert not s3_has(s3_client, name)


def altered(kwargs, **changes):
    return {**kwargs, **changes}


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda k: altered(k, name=k["name"] + ".other"), id="altered-name"
        ),
        pytest.param(lambda k: altered(k, storage="s3"), id="altered-storage"),
        pytest.param(lambda k: altered(k, version="0" * 16), id="altered-version"),
        pytest.param(
            lambda k: altered(k, signature=k["signature"][:-2] + "xx"),
            id="bad-signature",
        ),
        pytest.param(
            lambda k: {x: v for x, v in k.items() if x != "signature"}, id="stripped"
        ),
    ],
)
def test_tampered_message_is_rejected(
    celery_worker, celery_app, pending, tamper, s3_client, unique
):
    storage, name, version = pending
    storage.local.save(name + ".other", ContentFile(b"other"))
    kwargs = message.sign(TASK, storage.reference, name, version)
    celery_app.send_task(TASK, kwargs=tamper(kwargs))
    drain(celery_app, unique)
    assert_untouched(storage, name, version, s3_client)
    assert not s3_has(s3_client, name + ".other")


def test_message_for_another_task_is_rejected(
    celery_worker, celery_app, pending, s3_client, unique
):
    storage, name, version = pending
    kwargs = message.sign(
        "queued_storage.tasks.TransferAndDelete", storage.reference, name, version
    )
    celery_app.send_task(TASK, kwargs=kwargs)
    drain(celery_app, unique)
    assert_untouched(storage, name, version, s3_client)


def test_expired_message_is_rejected(
    celery_worker, celery_app, pending, s3_client, unique, caplog, monkeypatch
):
    from django.core.signing import TimestampSigner, b62_encode

    storage, name, version = pending
    with monkeypatch.context() as patch:
        # Signed eight days ago, past the default limit of seven.
        old = int(time.time()) - 8 * 24 * 3600
        patch.setattr(TimestampSigner, "timestamp", lambda self: b62_encode(old))
        kwargs = message.sign(TASK, storage.reference, name, version)
    with caplog.at_level(logging.ERROR, logger="queued_storage"):
        celery_app.send_task(TASK, kwargs=kwargs)
        drain(celery_app, unique)
    assert_untouched(storage, name, version, s3_client)
    assert any("expired" in r.getMessage() for r in caplog.records)


def test_signed_message_for_an_unknown_storage_is_rejected(
    celery_worker, celery_app, pending, s3_client, unique, caplog
):
    storage, name, version = pending
    kwargs = message.sign(TASK, "nobody-configured-this", name, version)
    with caplog.at_level(logging.ERROR, logger="queued_storage"):
        celery_app.send_task(TASK, kwargs=kwargs)
        drain(celery_app, unique)
    assert_untouched(storage, name, version, s3_client)
    assert any("nobody-configured-this" in r.getMessage() for r in caplog.records)


def test_replayed_message_is_harmless(
    celery_worker, celery_app, pending, s3_client, unique
):
    storage, name, version = pending
    kwargs = message.sign(TASK, storage.reference, name, version)
    for _ in range(3):
        celery_app.send_task(TASK, kwargs=kwargs)
    drain(celery_app, unique)
    assert storage.using_remote(name)
    state = storage.get_state(name)
    assert (state.status, state.version, state.attempts) == (
        Status.TRANSFERRED,
        version,
        1,
    )
    body = s3_client.get_object(Bucket=BUCKET, Key=name)["Body"].read()
    assert body == b"secret"


def test_message_carries_no_paths_or_options(tmp_path):
    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path)},
        remote_options={"access_key": "AKIA-SECRET", "bucket_name": BUCKET},
    )
    kwargs = message.sign(TASK, storage.reference, "a.txt", "v1")
    assert set(kwargs) == {"storage", "name", "version", "signature"}
    flat = repr(kwargs)
    assert "AKIA-SECRET" not in flat
    assert "storages.backends" not in flat and "FileSystemStorage" not in flat


def test_verify_names_what_is_wrong():
    kwargs = message.sign(TASK, "ref", "a.txt", "v1")
    assert message.verify(TASK, kwargs) == ("ref", "a.txt", "v1")
    with pytest.raises(InvalidMessage, match="differ from the signed"):
        message.verify(TASK, {**kwargs, "name": "b.txt"})
    with pytest.raises(InvalidMessage, match="not valid"):
        message.verify(TASK, {**kwargs, "signature": "nope"})
    with pytest.raises(InvalidMessage, match="lacks a field"):
        message.verify(TASK, {"name": "a.txt"})
    with override_settings(SECRET_KEY="another-key-entirely"):
        with pytest.raises(InvalidMessage, match="not valid"):
            message.verify(TASK, kwargs)
