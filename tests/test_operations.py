"""Operating the ledger: status, retry, reconcile, verify, import, the admin."""

import io
import json
import os
import pty
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from queued_storage import operations
from queued_storage.backends import QueuedS3Storage
from queued_storage.models import StoredFile
from queued_storage.state import Status
from tests.conftest import wait_for
from tests.testapp.models import Deferred, Document, Flaky
from tests.testapp.tasks import BrokenUntilFixed

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "queued-storage-tests"
pytestmark = pytest.mark.django_db(transaction=True)


def run(*args):
    out = io.StringIO()
    call_command("queued_storage", *args, stdout=out)
    return out.getvalue()


def test_status_counts_files_per_state(unique):
    for i in range(3):
        Deferred.objects.create(file=ContentFile(b"x", name=f"{unique}-{i}.txt"))
    result = json.loads(run("status", "--storage", "s3-delayed", "--json"))
    assert result["counts"]["pending"] == 3
    assert result["counts"]["transferred"] == 0
    assert result["oldest_pending_seconds"] >= 0
    text = run("status", "--storage", "s3-delayed")
    assert "pending: 3" in text


def test_storages_lists_references():
    listed = json.loads(run("storages", "--json"))
    assert listed["s3"] == "QueuedS3Storage"
    assert listed["queued"] == "QueuedStorage"


def test_unknown_storage_is_a_command_error():
    with pytest.raises(CommandError, match="No queued storage"):
        run("status", "--json", "--storage", "nope")
    with pytest.raises(CommandError, match="No queued storage"):
        run("verify", "--storage", "nope")


def test_reconcile_requeues_stale_pending_files(celery_worker, unique):
    with override_settings(
        QUEUED_STORAGE_PER_HOST_QUEUE=True, QUEUED_STORAGE_OUTBOX=False
    ):
        # Sent by save() to a queue no worker consumes: as good as lost.
        doc = Document.objects.create(file=ContentFile(b"x", name=f"{unique}.txt"))
    name, storage = doc.file.name, doc.file.storage
    assert storage.get_state(name).status == Status.PENDING
    StoredFile.objects.filter(name=name).update(status=Status.PENDING)
    assert (
        run("reconcile", "--older-than", "3600") == "Queued 0 stale transfers again.\n"
    )
    result = json.loads(
        run("reconcile", "--older-than", "0", "--json", "--storage", "s3")
    )
    assert name in result["queued"]
    wait_for(lambda: storage.using_remote(name))


def test_reconcile_lists_untracked_local_files(unique):
    storage = Deferred._meta.get_field("file").storage
    storage.local.save(f"later/stray-{unique}.txt", ContentFile(b"x"))
    result = json.loads(
        run("reconcile", "--untracked", "--json", "--storage", "s3-delayed")
    )
    assert f"later/stray-{unique}.txt" in result["untracked"]["s3-delayed"]


def test_retry_queues_failed_files_again(celery_worker, unique):
    item = Flaky.objects.create(file=ContentFile(b"x", name=f"{unique}.txt"))
    name, storage = item.file.name, item.file.storage
    wait_for(lambda: storage.get_state(name).status == Status.FAILED, timeout=60)
    BrokenUntilFixed.fixed = True
    try:
        result = json.loads(run("retry", "--json", "--storage", "s3-flaky"))
        assert result["queued"] == [name]
        wait_for(lambda: storage.using_remote(name))
    finally:
        BrokenUntilFixed.fixed = False


def test_verify_reports_a_changed_remote_copy(celery_worker, s3_client, unique):
    doc = Document.objects.create(file=ContentFile(b"original", name=f"{unique}.txt"))
    name = doc.file.name
    wait_for(lambda: doc.file.storage.using_remote(name))
    assert (
        json.loads(run("verify", "--json", "--storage", "s3", name))["mismatches"]["s3"]
        == {}
    )
    s3_client.put_object(Bucket=BUCKET, Key=name, Body=b"tampered with!")
    result = json.loads(run("verify", "--json", "--storage", "s3", name))
    assert "14 bytes" in result["mismatches"]["s3"][name]
    with pytest.raises(CommandError, match="1 transferred files do not match"):
        run("verify", "--storage", "s3", name)


def test_periodic_reconcile_task(celery_worker, unique):
    from queued_storage.tasks import reconcile

    with override_settings(QUEUED_STORAGE_PER_HOST_QUEUE=True):
        doc = Document.objects.create(file=ContentFile(b"x", name=f"{unique}.txt"))
    stale = timezone.now() - operations.default_age() - timedelta(seconds=1)
    StoredFile.objects.filter(name=doc.file.name).update(updated=stale)
    assert reconcile.delay().id
    wait_for(lambda: doc.file.storage.using_remote(doc.file.name))


@pytest.fixture
def import_storage(tmp_path, unique):
    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path / "site")},
        remote_options={"location": f"import-{unique}"},
        reference=f"import-{unique}",
    )
    for i in range(40):
        storage.local.save(f"d{i % 4}/f{i}.txt", ContentFile(f"file {i}".encode()))
    return storage


def remote_count(s3_client, prefix):
    pages = s3_client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix
    )
    return sum(len(page.get("Contents", ())) for page in pages)


def test_import_dry_run_moves_nothing(import_storage, s3_client):
    report = operations.bulk_import(import_storage, dry_run=True)
    assert report.done == 40
    assert remote_count(s3_client, import_storage.remote.location) == 0
    assert not StoredFile.objects.filter(storage=import_storage.reference).exists()


def test_import_resumes_after_an_interruption(import_storage, s3_client):
    first = operations.bulk_import(import_storage, limit=15)
    assert first.done == 15
    assert remote_count(s3_client, import_storage.remote.location) == 15
    second = operations.bulk_import(import_storage)
    assert second.skipped == 15 and second.done == 25
    assert remote_count(s3_client, import_storage.remote.location) == 40
    assert all(import_storage.using_remote(f"d{i % 4}/f{i}.txt") for i in range(40))
    rows = StoredFile.objects.filter(storage=import_storage.reference)
    assert rows.filter(status=Status.TRANSFERRED).count() == 40


def test_import_rate_limit_spaces_files(import_storage):
    import time

    started = time.monotonic()
    operations.bulk_import(import_storage, limit=6, rate=20)
    assert time.monotonic() - started >= 5 / 20


def test_admin_lists_filters_and_acts(client, django_user_model, celery_worker, unique):
    staff = django_user_model.objects.create_superuser("op", "op@example.com", "pw")
    client.force_login(staff)
    item = Flaky.objects.create(file=ContentFile(b"x", name=f"{unique}.txt"))
    name, storage = item.file.name, item.file.storage
    wait_for(lambda: storage.get_state(name).status == Status.FAILED, timeout=60)
    page = client.get("/admin/queued_storage/storedfile/?status__exact=failed")
    assert page.status_code == 200
    assert name in page.content.decode()
    assert "the transfer returned False" in page.content.decode()
    row = StoredFile.objects.get(name=name)
    detail = client.get(f"/admin/queued_storage/storedfile/{row.pk}/change/")
    assert detail.status_code == 200
    assert b'name="status"' not in detail.content  # Read-only.
    assert client.get("/admin/queued_storage/storedfile/add/").status_code == 403
    BrokenUntilFixed.fixed = True
    try:
        response = client.post(
            "/admin/queued_storage/storedfile/",
            {"action": "retry_transfers", "_selected_action": [row.pk]},
            follow=True,
        )
        assert "Queued 1 failed transfers again." in response.content.decode()
        wait_for(lambda: storage.using_remote(name))
    finally:
        BrokenUntilFixed.fixed = False
    response = client.post(
        "/admin/queued_storage/storedfile/",
        {"action": "verify_copies", "_selected_action": [row.pk]},
        follow=True,
    )
    assert "All transferred copies match." in response.content.decode()


def test_import_shows_a_progress_bar_on_a_terminal(import_storage):
    primary, replica = pty.openpty()
    command = [
        sys.executable,
        "-m",
        "django",
        "queued_storage",
        "import",
        "--storage",
        "s3-import-tty",
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=replica,
        stdout=replica,
        stderr=replica,
        env={
            **os.environ,
            "QS_TEST_WORKER": "1",
            "QS_TEST_IMPORT_DIR": str(import_storage.local.location),
        },
    )
    os.close(replica)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=120) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "[" in text and "40/40" in text and "\r" in text
    assert "Moved 40 files" in text


def test_retry_of_selected_rows_leaves_other_storages_alone(unique):
    name = f"same-{unique}.txt"
    a = Deferred._meta.get_field("file").storage
    b = Document._meta.get_field("file").storage
    for storage in (a, b):
        storage.local.save(name, ContentFile(b"x"))
        storage.state.record(
            name, storage.get_state(name).evolve(status=Status.FAILED, version="v1")
        )
    selected = StoredFile.objects.filter(storage=a.reference)
    assert operations.retry_failed(rows=selected) == [name]
    assert (
        StoredFile.objects.get(storage=b.reference, name=name).status == Status.FAILED
    )
    # Queued again: the suite's worker may have taken it up already.
    assert StoredFile.objects.get(storage=a.reference, name=name).status in (
        Status.PENDING, Status.TRANSFERRING, Status.TRANSFERRED,
    )  # fmt: skip


def test_django_options_are_accepted_after_the_action():
    done = subprocess.run(
        [sys.executable, "-m", "django", "queued_storage", "storages",
         "--settings", "tests.settings", "-v", "0", "--json"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "no.such.module"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["s3"] == "QueuedS3Storage"


def test_a_probed_state_prints_as_the_plain_status(fs_queued):
    storage = fs_queued(reference="probed-status")
    name = storage.local.save("probed.txt", ContentFile(b"x"))
    state = storage.get_state(name)
    assert repr(state.status) == "'pending'"
    assert type(state.status) is str
