"""End to end through a real Celery worker (in a thread) and the S3 endpoint."""

import os

import pytest
import requests
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage

from queued_storage.backends import QueuedS3Storage
from queued_storage.signals import file_transferred, local_deleted, transfer_failed
from queued_storage.state import Status
from tests.conftest import wait_for
from tests.testapp.models import Deferred, Document, Flaky, Scratch
from tests.testapp.tasks import BrokenUntilFixed

BUCKET = "queued-storage-tests"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def received():
    """Collect the lifecycle signals sent during a test."""
    seen = []

    def record(signal_name):
        def receiver(sender, **kwargs):
            seen.append((signal_name, kwargs))

        return receiver

    receivers = {
        file_transferred: record("transferred"),
        transfer_failed: record("failed"),
        local_deleted: record("local_deleted"),
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    yield seen
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


def s3_body(s3_client, key):
    return s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_field_file_goes_local_then_remote(celery_worker, s3_client, received, unique):
    doc = Document.objects.create(file=ContentFile(b"hello", name=f"{unique}.txt"))
    name = doc.file.name
    storage = doc.file.storage
    assert name == f"docs/{unique}.txt"
    wait_for(lambda: received)
    assert storage.using_remote(name)
    assert s3_body(s3_client, name) == b"hello"
    url = Document.objects.get(pk=doc.pk).file.url
    assert url.startswith(storage.remote.endpoint_url) and url.endswith(name)
    assert requests.get(url, timeout=5).content == b"hello"
    with storage.open(name) as handle:
        assert handle.read() == b"hello"
    transferred = [kw for signal, kw in received if signal == "transferred"]
    assert [kw["name"] for kw in transferred] == [name]
    assert transferred[0]["remote"] is storage.remote
    assert transferred[0]["local"] is storage.local
    # The local copy stays with the plain Transfer task.
    assert storage.local.exists(name)


def test_transfer_and_delete_removes_the_local_copy(
    celery_worker, s3_client, received, unique
):
    item = Scratch.objects.create(file=ContentFile(b"bye", name=f"{unique}.txt"))
    name, storage = item.file.name, item.file.storage
    wait_for(lambda: any(signal == "local_deleted" for signal, _ in received))
    assert not storage.local.exists(name)
    assert storage.using_remote(name)
    assert s3_body(s3_client, name) == b"bye"
    with storage.open(name) as handle:
        assert handle.read() == b"bye"
    deleted = [kw for signal, kw in received if signal == "local_deleted"]
    assert [(kw["name"], kw["storage"]) for kw in deleted] == [(name, storage)]


class RecordingLocal(FileSystemStorage):
    """A local storage that notes, when its copy goes, where reads would go."""

    seen: list = []
    queued = None


def test_state_flips_to_remote_before_the_local_copy_goes(
    celery_worker, tmp_path, unique, monkeypatch
):
    from queued_storage import local_copy

    move = local_copy.move_aside

    def recording_move(path, aside):
        name = os.path.relpath(path, tmp_path)
        RecordingLocal.seen.append(RecordingLocal.queued.using_remote(name))
        move(path, aside)

    monkeypatch.setattr(local_copy, "move_aside", recording_move)
    storage = QueuedS3Storage(
        local="tests.test_worker.RecordingLocal",
        local_options={"location": str(tmp_path)},
        task="queued_storage.tasks.TransferAndDelete",
    )
    RecordingLocal.queued = storage
    RecordingLocal.seen.clear()
    name = storage.save(f"flip-{unique}.txt", ContentFile(b"x"))
    wait_for(lambda: RecordingLocal.seen)
    assert RecordingLocal.seen == [True]
    wait_for(lambda: not storage.local.exists(name))


def test_delayed_storage_moves_only_when_asked(celery_worker, s3_client, unique):
    item = Deferred.objects.create(file=ContentFile(b"later", name=f"{unique}.txt"))
    name, storage = item.file.name, item.file.storage
    # A plain storage saved at the same time has long been transferred...
    doc = Document.objects.create(file=ContentFile(b"now", name=f"{unique}.txt"))
    wait_for(lambda: doc.file.storage.using_remote(doc.file.name))
    # ...while the delayed one is still local only.
    assert storage.get_state(name).status == Status.PENDING
    assert "Contents" not in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=name)
    assert item.file.transfer() is not None
    wait_for(lambda: storage.using_remote(name))
    assert s3_body(s3_client, name) == b"later"


def test_task_returning_false_retries_then_gives_up(
    celery_worker, s3_client, received, unique
):
    item = Flaky.objects.create(file=ContentFile(b"stuck", name=f"{unique}.txt"))
    name, storage = item.file.name, item.file.storage
    state = wait_for(
        lambda: (s := storage.get_state(name)).status == Status.FAILED and s, timeout=60
    )
    # One first try and QUEUED_STORAGE_RETRIES (2 in the tests) retries.
    assert state.attempts == 3
    assert state.error == "the transfer returned False"
    assert storage.using_local(name)
    with storage.open(name) as handle:
        assert handle.read() == b"stuck"
    assert storage.url(name) == storage.local.url(name)
    failed = [kw for signal, kw in received if signal == "failed"]
    assert [(kw["name"], kw["attempts"]) for kw in failed] == [(name, 3)]
    assert "Contents" not in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=name)


def test_failed_transfer_can_be_retried(celery_worker, unique):
    item = Flaky.objects.create(file=ContentFile(b"x", name=f"{unique}.txt"))
    name, storage = item.file.name, item.file.storage
    wait_for(lambda: storage.get_state(name).status == Status.FAILED, timeout=60)
    failed_version = storage.get_state(name).version
    # As an operator would, once the cause is fixed.
    BrokenUntilFixed.fixed = True
    try:
        assert item.file.transfer() is not None
        wait_for(lambda: storage.using_remote(name))
    finally:
        BrokenUntilFixed.fixed = False
    assert storage.get_state(name).version != failed_version


def test_file_deleted_before_the_worker_runs_is_skipped(
    celery_worker, s3_client, unique
):
    item = Deferred.objects.create(file=ContentFile(b"x", name=f"{unique}.txt"))
    name, storage = item.file.name, item.file.storage
    version = storage.get_state(name).version
    storage.delete(name)
    assert storage.enqueue(name, version) is not None
    # The single worker takes tasks in order: once a later file is remote,
    # the message of the deleted one has been handled.
    doc = Document.objects.create(file=ContentFile(b"marker", name=f"{unique}.txt"))
    wait_for(lambda: doc.file.storage.using_remote(doc.file.name))
    assert "Contents" not in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=name)
    assert storage.get_state(name).status == Status.DELETED


def test_storages_are_reused_across_tasks(celery_worker, unique):
    docs = [
        Document.objects.create(file=ContentFile(b"x", name=f"{unique}-{i}.txt"))
        for i in range(3)
    ]
    storage = docs[0].file.storage
    remote_before = storage.remote
    for doc in docs:
        wait_for(lambda doc=doc: storage.using_remote(doc.file.name))
    assert storage.remote is remote_before
    assert all(doc.file.storage is storage for doc in docs)


def test_log_records_name_storage_attempt_and_status(celery_worker, caplog, unique):
    import logging

    with caplog.at_level(logging.INFO, logger="queued_storage"):
        doc = Document.objects.create(file=ContentFile(b"x", name=f"{unique}.txt"))
        name = doc.file.name
        wait_for(lambda: doc.file.storage.using_remote(name))
        doc.file.delete()
    records = [r for r in caplog.records if r.name == "queued_storage"]
    statuses = [r.status for r in records if getattr(r, "file_name", None) == name]
    assert statuses == ["pending", "transferring", "transferred", "deleted"]
    assert all(r.storage == "s3" for r in records if hasattr(r, "file_name"))
    assert [r.attempt for r in records if r.getMessage().startswith("Transferr")] == [
        1,
        1,
    ]


def test_recorded_errors_do_not_show_credentials(tmp_path, unique):
    from django.test import override_settings

    from queued_storage import message
    from queued_storage.backends import QueuedStorage
    from queued_storage.tasks import Transfer, get_task
    from tests.services import free_port

    storage = QueuedStorage(
        local="django.core.files.storage.FileSystemStorage",
        remote="storages.backends.ftp.FTPStorage",
        local_options={"location": str(tmp_path)},
        remote_options={"location": f"ftp://user:pw-{unique}@127.0.0.1:{free_port()}/"},
        delayed=True,
    )
    with override_settings(QUEUED_STORAGE_NAME_CHECK="state", QUEUED_STORAGE_RETRIES=0):
        name = storage.save("secret.txt", ContentFile(b"x"))
        version = storage.get_state(name).version
        task = get_task(Transfer.name)
        assert not task.run(**message.sign(task.name, storage.reference, name, version))
    state = storage.get_state(name)
    assert state.status == Status.FAILED
    assert "***" in state.error and f"pw-{unique}" not in state.error
