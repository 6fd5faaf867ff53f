"""End to end with a real ``db_worker`` of django-tasks-db, as deployed.

The test process saves files with the django_tasks runner; a separate
worker process (``manage.py db_worker``) polls the database for the tasks
and runs the transfers. It uses the test run's database, SQLite by default
or PostgreSQL with ``QUEUED_STORAGE_TEST_DB=postgres``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.test import override_settings
from django_tasks_db.models import DBTaskResult

from queued_storage import operations
from queued_storage.enqueue import this_host
from queued_storage.models import StoredFile
from queued_storage.runners.django_tasks import transfer
from queued_storage.state import Status
from tests.conftest import wait_for
from tests.services import TasksWorkerProcess
from tests.tasks_app import (
    OUTAGE,
    deleting_storage,
    overwriting_storage,
    retained_storage,
    slow_storage,
)
from tests.tasks_app import ROOT as TASKS_ROOT
from tests.tasks_app import transfer as marking_transfer
from tests.testapp.models import Document

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "queued-storage-tests"
LEASE = 2
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def start_worker(upload_seconds: float = 1.0) -> TasksWorkerProcess:
    return TasksWorkerProcess(
        "tests.settings",
        backend="database",
        cwd=ROOT,
        env={
            "QS_TEST_WORKER": "1",
            "QS_TEST_TASKS_BACKEND": "database",
            "QS_TEST_LEASE": str(LEASE),
            "QS_TEST_UPLOAD_SECONDS": str(upload_seconds),
        },
    ).start()


@pytest.fixture
def runner_settings(transactional_db):
    OUTAGE.unlink(missing_ok=True)
    with override_settings(
        QUEUED_STORAGE_RUNNER="django_tasks",
        QUEUED_STORAGE_TASKS_BACKEND="database",
        QUEUED_STORAGE_LEASE=LEASE,
    ):
        yield
    OUTAGE.unlink(missing_ok=True)


@pytest.fixture
def worker(runner_settings):
    process = start_worker()
    try:
        yield process
    finally:
        process.stop()


def row(storage, name):
    return StoredFile.objects.get(storage=storage.reference, name=name)


def results_for(name):
    return [
        found
        for found in DBTaskResult.objects.order_by("enqueued_at")
        if found.args_kwargs["kwargs"].get("name") == name
    ]


def finished(name, count=1):
    done = [r for r in results_for(name) if r.status in ("SUCCESSFUL", "FAILED")]
    return done if len(done) >= count else None


def test_the_db_worker_moves_a_file_to_s3_and_reads_follow(worker, s3_client, unique):
    doc = Document.objects.create(
        file=ContentFile(b"by db_worker", name=f"{unique}.txt")
    )
    storage, name = doc.file.storage, doc.file.name
    wait_for(lambda: storage.using_remote(name), timeout=30)
    body = s3_client.get_object(Bucket=BUCKET, Key=name)["Body"].read()
    assert body == b"by db_worker"
    assert storage.url(name) == storage.remote.url(name)
    [result] = finished(name)
    assert result.status == "SUCCESSFUL"
    assert result.task_path == "queued_storage.runners.django_tasks.transfer"
    assert set(result.args_kwargs["kwargs"]) == {
        "storage", "name", "version", "signature",
    }  # fmt: skip
    found = row(storage, name)
    assert (found.status, found.attempts) == (Status.TRANSFERRED, 1)
    assert f"Transferred '{name}'" in worker.log_text()


def test_a_custom_task_runs_its_own_after_transfer(worker, unique):
    name = slow_storage.save(f"custom-{unique}.txt", ContentFile(b"x"))
    wait_for(lambda: slow_storage.using_remote(name), timeout=30)
    mark = TASKS_ROOT / "marks" / name.replace("/", "_")
    wait_for(mark.exists, timeout=10)
    assert results_for(name)[0].task_path == "tests.tasks_app.transfer"


def test_a_file_deleted_during_its_transfer_does_not_reach_the_remote(worker, unique):
    name = slow_storage.save(f"deleted-{unique}.txt", ContentFile(b"x"))
    wait_for(lambda: row(slow_storage, name).status == Status.TRANSFERRING)
    slow_storage.delete(name)
    wait_for(lambda: finished(name), timeout=30)
    assert not slow_storage.remote.exists(name)
    assert not slow_storage.exists(name)
    assert row(slow_storage, name).status == Status.DELETED


def test_a_remote_outage_is_retried_with_backoff_then_recovers(worker, unique):
    OUTAGE.parent.mkdir(parents=True, exist_ok=True)
    OUTAGE.touch()
    name = slow_storage.save(f"outage-{unique}.txt", ContentFile(b"later"))
    wait_for(
        lambda: (
            row(slow_storage, name).attempts == 1
            and row(slow_storage, name).status == Status.PENDING
        ),
        timeout=30,
    )
    failed = row(slow_storage, name)
    assert "OSError" in failed.last_error and failed.next_attempt is not None
    OUTAGE.unlink()
    wait_for(lambda: slow_storage.using_remote(name), timeout=30)
    found = row(slow_storage, name)
    assert (found.status, found.attempts) == (Status.TRANSFERRED, 2)
    first, retry = results_for(name)[:2]
    # The retry was deferred to the time the ledger recorded (computed a
    # moment later by the runner).
    slack = timedelta(seconds=1)
    assert failed.next_attempt <= retry.run_after <= failed.next_attempt + slack
    assert retry.run_after > first.enqueued_at
    with slow_storage.open(name) as handle:
        assert handle.read() == b"later"


def test_reconcile_finishes_a_file_whose_worker_was_killed(runner_settings, unique):
    first = start_worker(upload_seconds=30)
    try:
        name = slow_storage.save(f"killed-{unique}.txt", ContentFile(b"x"))
        wait_for(lambda: row(slow_storage, name).status == Status.TRANSFERRING)
    finally:
        first.kill()
    # The framework leaves the task running for ever; the lease expires.
    [stuck] = results_for(name)
    assert stuck.status == "RUNNING"
    second = start_worker(upload_seconds=0.1)
    try:
        wait_for(lambda: operations.reconcile(storage=slow_storage.reference), 30)
        wait_for(lambda: slow_storage.using_remote(name), timeout=30)
    finally:
        second.stop()
    assert row(slow_storage, name).attempts == 2


def test_the_worker_refuses_a_forged_message(runner_settings, unique):
    with override_settings(QUEUED_STORAGE_TASKS_BACKEND="dummy"):
        name = slow_storage.save(f"forged-{unique}.txt", ContentFile(b"x"))
    version = row(slow_storage, name).version
    forged = transfer.using(backend="database")
    forged.enqueue(
        storage=slow_storage.reference, name=name, version=version,
        signature="forged:signature",
    )  # fmt: skip
    process = start_worker()
    try:
        [result] = wait_for(lambda: finished(name), timeout=30)
    finally:
        process.stop()
    assert result.status == "FAILED"
    assert "Rejected a transfer message" in process.log_text()
    found = row(slow_storage, name)
    assert (found.status, found.attempts) == (Status.PENDING, 0)
    assert not slow_storage.remote.exists(name)


def test_per_host_queues_keep_transfers_on_the_host_that_saved(runner_settings, unique):
    elsewhere = TasksWorkerProcess(
        "tests.settings", backend="database", cwd=ROOT,
        env={"QS_TEST_WORKER": "1", "QS_TEST_TASKS_BACKEND": "database"},
        queues="queued_storage.another-host", extra_args=("--batch",),
    )  # fmt: skip
    with override_settings(QUEUED_STORAGE_PER_HOST_QUEUE=True):
        name = slow_storage.save(f"host-{unique}.txt", ContentFile(b"x"))
    [waiting] = results_for(name)
    assert waiting.queue_name == f"queued_storage.{this_host()}"
    # The other host's worker runs everything due on its queue, then exits.
    elsewhere.start()
    try:
        wait_for(lambda: not elsewhere.is_running(), timeout=30)
    finally:
        elsewhere.stop()
    assert results_for(name)[0].status == "READY"
    here = TasksWorkerProcess(
        "tests.settings", backend="database", cwd=ROOT,
        env={"QS_TEST_WORKER": "1", "QS_TEST_TASKS_BACKEND": "database",
             "QS_TEST_UPLOAD_SECONDS": "0.1"},
        queues=f"queued_storage.{this_host()}",
    ).start()  # fmt: skip
    try:
        wait_for(lambda: slow_storage.using_remote(name), timeout=30)
    finally:
        here.stop()


def test_a_file_saved_again_during_its_transfer_ends_with_the_newer_content(
    worker, unique
):
    storage = overwriting_storage
    name = storage.save(f"again-{unique}.txt", ContentFile(b"older"))
    first = row(storage, name).version
    wait_for(lambda: row(storage, name).status == Status.TRANSFERRING)
    assert storage.save(name, ContentFile(b"newer")) == name
    newer = row(storage, name).version
    assert newer != first
    wait_for(lambda: finished(name, count=2), timeout=30)
    wait_for(lambda: storage.using_remote(name), timeout=30)
    found = row(storage, name)
    assert (found.status, found.version) == (Status.TRANSFERRED, newer)
    with storage.remote.open(name) as handle:
        assert handle.read() == b"newer"
    with storage.open(name) as handle:
        assert handle.read() == b"newer"


def test_a_replayed_message_uploads_nothing_again(worker, unique):
    name = slow_storage.save(f"replayed-{unique}.txt", ContentFile(b"once"))
    [sent] = results_for(name)
    wait_for(lambda: slow_storage.using_remote(name), timeout=30)
    uploaded = Path(slow_storage.remote.path(name)).stat()
    assert sent.task_path == "tests.tasks_app.transfer"
    replay = marking_transfer.using(backend="database")
    kwargs = sent.args_kwargs["kwargs"]
    for _ in range(2):
        replay.enqueue(**kwargs)
    results = wait_for(lambda: finished(name, count=3), timeout=30)
    assert [result.status for result in results] == ["SUCCESSFUL"] * 3
    found = row(slow_storage, name)
    assert (found.status, found.attempts) == (Status.TRANSFERRED, 1)
    again = Path(slow_storage.remote.path(name)).stat()
    assert (again.st_ino, again.st_mtime_ns) == (uploaded.st_ino, uploaded.st_mtime_ns)
    assert worker.log_text().count(f"Transferring '{name}'") == 1


def test_a_retention_of_zero_removes_the_local_copy_after_the_worker_transfer(
    worker, unique
):
    storage = retained_storage
    name = storage.save(f"retained-{unique}.txt", ContentFile(b"kept remote"))
    assert storage.local.exists(name)
    wait_for(lambda: row(storage, name).local_deleted is not None, timeout=30)
    assert not storage.local.exists(name)
    assert storage.using_remote(name)
    with storage.open(name) as handle:
        assert handle.read() == b"kept remote"
    assert f"Removed the local copy of '{name}'" in worker.log_text()


def test_transfer_and_delete_on_the_worker_records_the_removal_in_the_ledger(
    worker, unique
):
    storage = deleting_storage
    name = storage.save(f"deleted-local-{unique}.txt", ContentFile(b"moved"))
    wait_for(lambda: storage.using_remote(name), timeout=30)
    wait_for(lambda: row(storage, name).local_deleted is not None, timeout=30)
    assert not storage.local.exists(name)
    with storage.remote.open(name) as handle:
        assert handle.read() == b"moved"
