"""Races and damage: deletes and saves while a transfer is in flight, many saves
of one name at once, a remote that holds another object, a network that
damages uploads, a local copy that is gone.

The transfers run in the suite's thread worker (one at a time, in order); the
outcome is read from the S3 endpoint with boto3 and from the directories.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.db import connections as db_connections
from django.test import override_settings

from queued_storage.backends import QueuedS3Storage, QueuedStorage
from queued_storage.models import StoredFile
from queued_storage.signals import transfer_failed
from queued_storage.state import Status
from tests.conftest import wait_for
from tests.reliability_app import S3_CLIENT, S3Proxy, shared_storage

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "queued-storage-tests"
FS = "django.core.files.storage.FileSystemStorage"
SLOW = "tests.reliability_app.SlowFileSystemStorage"
MIB = 2**20

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO, logger="queued_storage")
    return caplog


@pytest.fixture
def failures():
    """Collect the ``transfer_failed`` signals sent during a test."""
    seen = []

    def receiver(sender, **kwargs):
        seen.append(kwargs)

    transfer_failed.connect(receiver)
    yield seen
    transfer_failed.disconnect(receiver)


@pytest.fixture
def build(tmp_path, unique):
    """Return a function that builds a queued storage of this test alone.

    The local copy is read at 4 MiB/s, so that a transfer of a few MiB is in
    flight long enough to act on; the remote is S3, or a directory.
    """

    def build(remote="s3", **local):
        options = {"location": str(tmp_path / "local"), "read_rate": 4 * MIB, **local}
        if remote == "s3":
            remote_options = {
                "location": f"reliability/{unique}",
                "client_config": S3_CLIENT,
            }
            cls, remote = QueuedS3Storage, None
        else:
            remote_options = {"location": str(tmp_path / "remote")}
            cls, remote = QueuedStorage, FS
        return cls(
            local=SLOW, local_options=options, remote=remote,
            remote_options=remote_options, reference=f"reliability-{unique}",
        )  # fmt: skip

    return build


def remote_names(storage, s3_client):
    """Return every name the remote of *storage* holds, read from S3 or the disk."""
    location = storage.remote.location
    if isinstance(storage, QueuedS3Storage):
        listing = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=f"{location}/")
        return sorted(
            o["Key"][len(location) + 1 :] for o in listing.get("Contents", ())
        )
    root = Path(location)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def remote_bytes(storage, s3_client, name):
    if isinstance(storage, QueuedS3Storage):
        key = f"{storage.remote.location}/{name}"
        return s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return (Path(storage.remote.location) / name).read_bytes()


def row(storage, name):
    return StoredFile.objects.get(storage=storage.reference, name=name)


def read(storage, name):
    with storage.open(name) as handle:
        return handle.read()


def records(log, name, start):
    return [r for r in log.records if r.msg.startswith(start) and r.args[0] == name]


# Deleted while pending or in flight -------------------------------------------------


@pytest.mark.timeout(60)
@override_settings(QUEUED_STORAGE_OUTBOX=False)
def test_delete_while_pending_skips_the_transfer_without_retrying(
    celery_worker, build, s3_client, log
):
    """The message is sent by save(): the worker meets a deleted file.

    (With the outbox, a file deleted before its message is sent has none:
    ``test_a_file_deleted_in_the_outbox_is_never_sent``.)"""
    storage = build()
    busy = storage.save("busy.bin", ContentFile(os.urandom(4 * MIB)))
    wait_for(lambda: records(log, busy, "Transferring"), timeout=20)
    # The worker is busy with the first file for a second: this one waits.
    name = storage.save("pending.txt", ContentFile(b"never to arrive"))
    storage.delete(name)
    wait_for(lambda: records(log, name, "Skipped"), timeout=20)
    wait_for(lambda: row(storage, busy).status == Status.TRANSFERRED, timeout=20)
    assert records(log, name, "Transferring") == []
    assert records(log, name, "Transfer of") == []  # Neither retried nor failed.
    assert (row(storage, name).status, row(storage, name).attempts) == (
        Status.DELETED,
        0,
    )
    assert remote_names(storage, s3_client) == [busy]
    assert not storage.local.exists(name)
    assert not storage.exists(name)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("remote", ["s3", "directory"])
def test_delete_while_in_flight_leaves_nothing_on_either_side(
    celery_worker, build, s3_client, log, remote
):
    storage = build(remote)
    name = storage.save("in-flight.bin", ContentFile(os.urandom(6 * MIB)))
    wait_for(lambda: records(log, name, "Transferring"), timeout=20)
    time.sleep(0.3)  # The upload reads for 1.5 s.
    storage.delete(name)
    wait_for(lambda: records(log, name, "Discarded"), timeout=20)
    time.sleep(0.5)  # Whatever would bring the file back has had its chance.
    assert remote_names(storage, s3_client) == []
    assert list(Path(storage.local.location).rglob("*.bin")) == []
    assert records(log, name, "Transfer of") == []
    assert (row(storage, name).status, row(storage, name).attempts) == (
        Status.DELETED,
        1,
    )
    assert not storage.exists(name)


# Saved again while in flight -----------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("remote", ["s3", "directory"])
def test_saving_a_name_again_during_its_transfer_ends_with_the_newest_bytes(
    celery_worker, build, s3_client, log, remote
):
    """The local storage replaces files (allow_overwrite); both versions have
    the same size, so only their bytes tell them apart."""
    storage = build(remote, allow_overwrite=True)
    older, newer = os.urandom(6 * MIB), os.urandom(6 * MIB)
    name = storage.save("photo.bin", ContentFile(older))
    older_version = storage.get_state(name).version
    wait_for(lambda: records(log, name, "Transferring"), timeout=20)
    time.sleep(0.3)
    assert storage.save("photo.bin", ContentFile(newer)) == name
    newest = storage.get_state(name).version
    wait_for(lambda: row(storage, name).status == Status.TRANSFERRED, timeout=30)
    assert row(storage, name).version == newest != older_version
    assert remote_bytes(storage, s3_client, name) == newer
    assert read(storage, name) == newer
    # The first task's upload was stale: it was not allowed to count. Either
    # it finished and was discarded, or the replaced local copy failed its
    # check and the retry of the old version was skipped.
    if not records(log, name, "Discarded"):
        assert records(log, name, "Transfer of")
        wait_for(lambda: records(log, name, "Skipped"), timeout=10)
    assert len(records(log, name, "Transferred")) == 1


@pytest.mark.parametrize("outcome", ["retry", "fail"])
def test_a_failed_attempt_at_a_file_saved_again_leaves_the_new_state(
    build, log, outcome
):
    """The attempt's upload raised, and meanwhile the file was saved again: the
    attempt neither schedules a retry nor marks the new version failed."""
    from queued_storage.tasks import Transfer, get_task

    storage = build("directory", allow_overwrite=True)
    storage.delayed = True
    name = storage.save("again.bin", ContentFile(b"old"))
    moving = storage.get_state(name).evolve(status=Status.TRANSFERRING, attempts=1)
    storage.state.compare_and_set(name, moving.version, moving)
    assert storage.save("again.bin", ContentFile(b"new")) == name
    newest = storage.get_state(name)
    task: Transfer = get_task(storage.task)
    if outcome == "retry":
        assert task.retry_later(storage, name, moving, "boom") is False
    else:
        assert task.fail(storage, name, moving, "boom") is False
    assert records(log, name, "Discarded")
    assert (row(storage, name).status, row(storage, name).version) == (
        Status.PENDING, newest.version,
    )  # fmt: skip
    assert row(storage, name).last_error == ""


# Many saves of one name at once ----------------------------------------------------

#: A process that saves ten files named photo.jpg once told to go.
SAVER = """
import sys, django
django.setup()
from django.core.files.base import ContentFile
from tests.reliability_app import shared_storage
prefix, who = sys.argv[1:]
print("ready", flush=True)
sys.stdin.readline()
for i in range(10):
    data = f"{who} file {i}"
    name = shared_storage.save(f"{prefix}/photo.jpg", ContentFile(data.encode()))
    print(f"{name}\\t{data}", flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_fifty_saves_of_one_name_at_once_get_fifty_names(
    celery_worker, s3_client, unique
):
    """Twenty threads here and three processes of ten saves each race for
    ``photo.jpg``; each save gets a name of its own, locally and on S3."""
    env = {
        **os.environ,
        "QS_TEST_WORKER": "1",
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SAVER, unique, f"process {p}"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for p in range(3)
    ]
    saved, errors = {}, []
    start = threading.Barrier(21)

    def save(thread):
        try:
            start.wait(30)
            data = f"thread {thread}"
            saved[
                shared_storage.save(f"{unique}/photo.jpg", ContentFile(data.encode()))
            ] = data
        except Exception as exc:
            errors.append(exc)
        finally:
            db_connections.close_all()

    threads = [threading.Thread(target=save, args=(t,)) for t in range(20)]
    try:
        for thread in threads:
            thread.start()
        for process in processes:
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        start.wait(30)
        outputs = [process.communicate(timeout=60)[0] for process in processes]
        for thread in threads:
            thread.join(30)
    finally:
        for process in processes:
            process.kill()
    assert errors == []
    assert [p.returncode for p in processes] == [0, 0, 0]
    for output in outputs:
        for line in output.splitlines():
            name, data = line.split("\t")
            assert name not in saved
            saved[name] = data
    assert len(saved) == 50
    assert all(name.startswith(f"{unique}/photo") for name in saved)
    for name, data in saved.items():
        assert read(shared_storage, name) == data.encode()

    def unfinished():
        rows = StoredFile.objects.filter(
            storage=shared_storage.reference, name__in=saved
        )
        return len(saved) - sum(r.status == Status.TRANSFERRED for r in rows)

    wait_for(lambda: unfinished() == 0, timeout=60)
    assert sorted(remote_names(shared_storage, s3_client)) == sorted(
        n for n in remote_names(shared_storage, s3_client) if n.startswith(unique)
    )
    for name, data in saved.items():
        assert remote_bytes(shared_storage, s3_client, name) == data.encode()


# The remote holds another object under the name ------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("theirs", [b"written by another system", b"other bytes"])
def test_object_another_system_wrote_is_never_overwritten(
    celery_worker, build, s3_client, failures, theirs
):
    storage = build()
    ours = b"written by queued storage"  # As long as the first of theirs.
    key = f"{storage.remote.location}/conflict.txt"
    s3_client.put_object(Bucket=BUCKET, Key=key, Body=theirs)
    # Names are checked against the recorded states only: the collision
    # reaches the transfer, as when the object appears after the save.
    with override_settings(QUEUED_STORAGE_NAME_CHECK="state"):
        name = storage.save("conflict.txt", ContentFile(ours))
    assert name == "conflict.txt"
    wait_for(lambda: row(storage, name).status == Status.FAILED, timeout=20)
    assert row(storage, name).last_error.startswith("RemoteConflict: ")
    assert row(storage, name).attempts == 1  # Not retried: it cannot heal.
    assert s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == theirs
    assert read(storage, name) == ours
    assert storage.using_local(name)
    assert [(f["name"], f["error"].split(":")[0]) for f in failures] == [
        (name, "RemoteConflict")
    ]


# A network that damages uploads -----------------------------------------------------


@pytest.mark.timeout(60)
def test_upload_damaged_on_the_way_is_never_marked_transferred(
    celery_worker, servers, tmp_path, unique, s3_client
):
    marker = f"damage here {unique}".encode()
    proxy = S3Proxy(servers["s3"].port, marker, damage=True)
    try:
        storage = QueuedS3Storage(
            local_options={"location": str(tmp_path / "local")},
            remote_options={
                "location": f"reliability/{unique}",
                "client_config": S3_CLIENT,
                "endpoint_url": proxy.url,
            },
            reference=f"reliability-{unique}",
        )  # fmt: skip
        data = marker + os.urandom(MIB)
        name = storage.save("damaged.bin", ContentFile(data))
        seen = set()

        def settled():
            seen.add(row(storage, name).status)
            return seen & {Status.FAILED, Status.TRANSFERRED}

        wait_for(settled, timeout=30)
        assert Status.TRANSFERRED not in seen
        # Every try arrived damaged; the retries ran out.
        assert row(storage, name).last_error.startswith("VerificationFailed: ")
        assert row(storage, name).attempts == 3
        assert read(storage, name) == data
        assert storage.using_local(name)
        # The damaged copies were removed, not left for a reader to find.
        key = f"reliability/{unique}/{name}"
        assert "Contents" not in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=key)
    finally:
        proxy.close()


# The local copy is gone -------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("remote_copy", ["matching", "different"])
def test_missing_local_copy_counts_as_done_only_with_a_matching_remote_copy(
    celery_worker, tmp_path, unique, s3_client, remote_copy
):
    """As after a crash between the upload and the state change, followed by
    the loss of the local copy."""
    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path / "local")},
        remote_options={
            "location": f"reliability/{unique}",
            "client_config": S3_CLIENT,
        },
        reference=f"reliability-{unique}",
        delayed=True,
    )
    data = os.urandom(64 * 2**10)
    name = storage.save("uploaded.bin", ContentFile(data))
    body = data if remote_copy == "matching" else data[:-1]
    s3_client.put_object(Bucket=BUCKET, Key=f"reliability/{unique}/{name}", Body=body)
    os.remove(storage.local.path(name))
    storage.transfer(name)
    if remote_copy == "matching":
        wait_for(lambda: row(storage, name).status == Status.TRANSFERRED, timeout=20)
        assert read(storage, name) == data
    else:
        wait_for(lambda: row(storage, name).status == Status.FAILED, timeout=20)
        assert row(storage, name).last_error.startswith("LocalFileMissing: ")
