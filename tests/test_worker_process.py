"""End to end with ``celery worker`` as a separate process, as deployed."""

from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.test import override_settings

from queued_storage.state import Status
from tests.conftest import wait_for
from tests.services import CeleryWorkerProcess
from tests.testapp.models import Document, Scratch

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "queued-storage-tests"
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def worker_process(unique):
    queue = f"process-{unique}"
    worker = CeleryWorkerProcess(
        "tests.celery_app",
        env={"QS_TEST_WORKER": "1"},
        cwd=ROOT,
        pool="prefork",
        concurrency=2,
        queues=queue,
    ).start()
    try:
        with override_settings(QUEUED_STORAGE_QUEUE=queue):
            yield worker
    finally:
        worker.stop()


def test_worker_process_moves_files(worker_process, s3_client, unique):
    doc = Document.objects.create(
        file=ContentFile(b"via process", name=f"{unique}.txt")
    )
    item = Scratch.objects.create(file=ContentFile(b"and gone", name=f"{unique}.txt"))
    for field in (doc.file, item.file):
        wait_for(lambda f=field: f.storage.using_remote(f.name), timeout=60)
    body = s3_client.get_object(Bucket=BUCKET, Key=doc.file.name)["Body"].read()
    assert body == b"via process"
    assert doc.file.storage.local.exists(doc.file.name)
    wait_for(lambda: not item.file.storage.local.exists(item.file.name))
    with item.file.storage.open(item.file.name) as handle:
        assert handle.read() == b"and gone"
    log = worker_process.log_text()
    assert f"Transferred '{doc.file.name}'" in log
    # The ledger row was written by the worker process.
    from queued_storage.models import StoredFile

    row = StoredFile.objects.get(name=doc.file.name)
    assert (row.status, row.attempts) == (Status.TRANSFERRED, 1)
    assert row.transferred is not None
