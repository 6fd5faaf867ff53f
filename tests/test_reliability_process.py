"""Faults that need a worker process: killed mid-upload, crashed, on another host.

Each test runs its own ``celery worker`` processes on a queue of its own, so
the suite's thread worker never takes their messages, and reads the outcome
from the S3 endpoint and the local directories themselves.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.test import override_settings
from django.utils import timezone

from queued_storage import enqueue, operations
from queued_storage.backends import QueuedS3Storage
from queued_storage.models import StoredFile
from queued_storage.state import Status
from tests.conftest import wait_for
from tests.reliability_app import (
    S3_CLIENT,
    VERSIONED_BUCKET,
    S3Proxy,
    crash_marker,
    crash_storage,
    proxied_storage,
    slow_storage,
)
from tests.services import CeleryWorkerProcess

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "queued-storage-tests"
#: Seconds before Redis hands a message that was never acknowledged to
#: another worker; the worker processes of these tests run with it.
VISIBILITY = 2
#: Seconds a worker's lease of a file lasts; the workers renew it meanwhile.
LEASE = 2

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def queue(unique):
    """Send transfers to a queue that only this test's workers consume."""
    name = f"reliability-{unique}"
    with override_settings(QUEUED_STORAGE_QUEUE=name):
        yield name


@pytest.fixture
def workers():
    """Start worker processes of ``tests.reliability_app``; stop them afterwards."""
    started = []

    def start(queues, wait=True, concurrency=1, **env):
        worker = CeleryWorkerProcess(
            "tests.reliability_app",
            env={
                "QS_TEST_WORKER": "1",
                "QS_TEST_QUEUE": queues if isinstance(queues, str) else queues[-1],
                "QS_TEST_VISIBILITY_TIMEOUT": str(VISIBILITY),
                "QS_TEST_LEASE": str(LEASE),
                **env,
            },
            cwd=ROOT,
            pool="prefork",
            concurrency=concurrency,
            queues=queues,
        )  # fmt: skip
        started.append(worker)
        return worker.start(wait_ready=wait)

    yield start
    for worker in started:
        worker.kill()  # Their queues die with the test: nothing to finish.


def remote_object(s3_client, storage, name):
    """Return the bytes S3 holds for *name* of *storage*, or ``None``."""
    key = f"{storage.remote.location}/{name}"
    try:
        return s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except s3_client.exceptions.NoSuchKey:
        return None


def row(storage, name):
    return StoredFile.objects.get(storage=storage.reference, name=name)


def reaches(storage, name, status):
    """Return a predicate telling whether *name* has *status* in the ledger."""
    return lambda: row(storage, name).status == status


def reconcile_once_the_lease_expires(storage, name):
    """Wait until the lease of *name* has expired, then run reconcile."""
    wait_for(lambda: row(storage, name).lease_expires <= timezone.now(), timeout=10)
    assert operations.reconcile(storage=storage.reference) == [name]


@pytest.mark.timeout(90)
def test_worker_killed_mid_upload_is_taken_over_after_its_lease(
    queue, workers, s3_client, unique
):
    """SIGKILL the whole worker while 50 MiB stream to S3; once its lease
    expires, reconcile sends the file again, the restarted worker takes it
    over and the remote ends with every byte."""
    data = os.urandom(50 * 2**20)
    worker = workers(queue)
    name = slow_storage.save(f"{unique}/big.bin", ContentFile(data))
    worker.wait_for_log(rf"Transferring '{name}' \(attempt 1\)", timeout=30)
    time.sleep(1.0)  # Well into the upload, which takes 2.5 s.
    worker.kill()
    assert remote_object(s3_client, slow_storage, name) is None
    assert row(slow_storage, name).status == Status.TRANSFERRING
    with slow_storage.open(name) as handle:
        assert handle.read(16) == data[:16]
    worker = workers(queue)
    reconcile_once_the_lease_expires(slow_storage, name)
    wait_for(reaches(slow_storage, name, Status.TRANSFERRED), timeout=45)
    body = remote_object(s3_client, slow_storage, name)
    assert len(body) == len(data)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert row(slow_storage, name).attempts == 2
    assert f"Transferring '{name}' (attempt 2)" in worker.log_text()
    assert slow_storage.using_remote(name)


@pytest.mark.timeout(60)
def test_redeliveries_after_lost_workers_are_bounded(queue, workers, s3_client, unique):
    """Each upload started counts an attempt in the ledger; one past the limit
    marks the file failed instead of transferring it again."""
    worker = workers(queue)
    name = slow_storage.save(f"{unique}/again.bin", ContentFile(os.urandom(24 * 2**20)))
    worker.wait_for_log(rf"Transferring '{name}' \(attempt 1\)", timeout=30)
    # As if workers had died with the message that many times already.
    limit = settings.QUEUED_STORAGE_RETRIES + 1 + settings.QUEUED_STORAGE_MAX_DELIVERIES
    state = slow_storage.get_state(name)
    assert slow_storage.state.compare_and_set(
        name, state.version, state.evolve(attempts=limit)
    )
    worker.kill()
    worker = workers(queue)
    reconcile_once_the_lease_expires(slow_storage, name)
    wait_for(reaches(slow_storage, name, Status.FAILED), timeout=30)
    failed = row(slow_storage, name)
    assert failed.attempts == limit + 1
    assert failed.last_error == f"gave up after {limit} attempts"
    assert remote_object(s3_client, slow_storage, name) is None
    assert "failed for good" in worker.log_text()
    with slow_storage.open(name) as handle:
        assert len(handle.read()) == 24 * 2**20


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [3 * 2**20, 20 * 2**20], ids=["single", "multipart"])
def test_crash_after_the_upload_finishes_without_uploading_again(
    queue, workers, s3_client, unique, size
):
    """The worker's pool process dies right after a complete upload; once its
    lease expires, reconcile sends the file again and the rerun finds the
    remote copy matching. The bucket keeps versions: one upload, one version."""
    try:
        s3_client.create_bucket(Bucket=VERSIONED_BUCKET)
    except s3_client.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3_client.put_bucket_versioning(
        Bucket=VERSIONED_BUCKET, VersioningConfiguration={"Status": "Enabled"}
    )
    worker = workers(queue)
    data = os.urandom(size)
    name = crash_storage.save(f"{unique}/crash.bin", ContentFile(data))
    wait_for(crash_marker(name).exists, timeout=40)
    reconcile_once_the_lease_expires(crash_storage, name)
    wait_for(reaches(crash_storage, name, Status.TRANSFERRED), timeout=40)
    assert crash_marker(name).exists()
    assert row(crash_storage, name).attempts == 2
    key = f"{crash_storage.remote.location}/{name}"
    versions = s3_client.list_object_versions(Bucket=VERSIONED_BUCKET, Prefix=key)
    assert len(versions.get("Versions", [])) == 1
    body = s3_client.get_object(Bucket=VERSIONED_BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    log = worker.log_text()
    assert "SIGKILL" in log or "WorkerLostError" in log
    assert f"Transferring '{name}' (attempt 2)" in log


def host_storage_at(directory):
    """Return the per-host storage as the web process of one host builds it."""
    return QueuedS3Storage(
        local_options={"location": str(directory)},
        remote_options={"location": "reliability/host", "client_config": S3_CLIENT},
        reference="reliability-host",
    )


@pytest.mark.timeout(90)
@override_settings(QUEUED_STORAGE_OUTBOX=False)  # save() picks the queue.
def test_per_host_queues_route_each_transfer_to_a_worker_that_sees_the_file(
    queue, workers, s3_client, tmp_path, unique, monkeypatch
):
    """Two hosts, each with its own disk and worker: with
    QUEUED_STORAGE_PER_HOST_QUEUE each file reaches the worker of the host
    that wrote it; through one shared queue the other host's worker cannot
    read it and the transfer fails naming LocalFileMissing."""
    hosts = {host: tmp_path / host for host in ("host-a", "host-b")}
    started = {
        "host-a": workers([f"{queue}.host-a", queue], wait=False,
                          QS_TEST_HOST_DIR=str(hosts["host-a"])),
        "host-b": workers([f"{queue}.host-b"], wait=False,
                          QS_TEST_HOST_DIR=str(hosts["host-b"])),
    }  # fmt: skip
    for worker in started.values():
        worker.wait_for_log(r"\bready\.", timeout=30)
    names = {}
    with override_settings(QUEUED_STORAGE_PER_HOST_QUEUE=True):
        for host, directory in hosts.items():
            monkeypatch.setattr(enqueue, "this_host", lambda host=host: host)
            assert enqueue.transfer_queue() == f"{queue}.{host}"
            storage = host_storage_at(directory)
            names[host] = storage.save(
                f"{unique}/{host}.txt", ContentFile(host.encode())
            )
    for host, name in names.items():
        storage = host_storage_at(hosts[host])
        wait_for(reaches(storage, name, Status.TRANSFERRED), timeout=30)
        body = s3_client.get_object(Bucket=BUCKET, Key=f"reliability/host/{name}")[
            "Body"
        ]
        assert body.read() == host.encode()
        assert f"Transferred '{name}'" in started[host].log_text()
    assert f"'{names['host-b']}'" not in started["host-a"].log_text()

    # Without per-host queues, host-b's file goes to host-a's worker.
    storage = host_storage_at(hosts["host-b"])
    monkeypatch.setattr(enqueue, "this_host", lambda: "host-b")
    name = storage.save(f"{unique}/elsewhere.txt", ContentFile(b"on host-b only"))
    wait_for(reaches(storage, name, Status.FAILED), timeout=30)
    error = row(storage, name).last_error
    assert error.startswith("LocalFileMissing: ") and name in error
    assert "QUEUED_STORAGE_PER_HOST_QUEUE" in error
    assert f"Transferring '{name}'" in started["host-a"].log_text()
    with storage.open(name) as handle:
        assert handle.read() == b"on host-b only"


@pytest.mark.timeout(60)
def test_older_upload_landing_last_is_caught_and_the_newest_sent_again(
    queue, workers, servers, s3_client, unique
):
    """Two pool processes move two versions of one name (the local storage
    replaces files) at once; the network holds the older upload until the
    newer one is transferred. The remote must still end with the newest
    bytes, and reads must get them."""
    marker = f"held on the way {unique}".encode()
    proxy = S3Proxy(servers["s3"].port, marker, delay=3.0)
    try:
        worker = workers(queue, concurrency=2, QS_TEST_S3_PROXY=proxy.url)
        older = marker + os.urandom(2**20)
        newer = os.urandom(len(older))  # Same size: only the bytes differ.
        name = proxied_storage.save(f"{unique}/photo.bin", ContentFile(older))
        worker.wait_for_log(rf"Transferring '{name}' \(attempt 1\)", timeout=30)
        time.sleep(0.3)  # The older upload is on its way, held by the proxy.
        assert proxied_storage.save(f"{unique}/photo.bin", ContentFile(newer)) == name
        worker.wait_for_log(rf"Transferred '{name}'", timeout=30)
        worker.wait_for_log(rf"Discarded '{name}'", timeout=30)
        wait_for(reaches(proxied_storage, name, Status.TRANSFERRED), timeout=30)
        assert remote_object(s3_client, proxied_storage, name) == newer
        with proxied_storage.open(name) as handle:
            assert handle.read() == newer
    finally:
        proxy.close()
