"""The outbox: save() sends nothing, and the dispatcher sends each message once.

Messages go to Redis, the real broker: a queue that no worker consumes counts
them, and the real worker of the suite moves the files a dispatcher process
queues.
"""

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import connections, transaction
from django.test import override_settings

from queued_storage import dispatch
from queued_storage.checks import check_settings
from queued_storage.models import StoredFile
from queued_storage.operations import status_counts
from queued_storage.signals import file_queued
from queued_storage.state import Status
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queue(unique, servers):
    """Send transfers to a queue nobody consumes; return a function counting them."""
    name = f"outbox-{unique}"
    client = redis.Redis.from_url(servers["redis"].url_for(0))
    with override_settings(QUEUED_STORAGE_QUEUE=name):
        yield lambda: client.llen(name)
    client.delete(name)


@pytest.fixture
def storage(fs_queued, unique):
    return fs_queued(reference=f"outbox-{unique}")


@pytest.fixture
def outbox():
    """The outbox, emptied only by the dispatches of the test itself."""
    with override_settings(
        QUEUED_STORAGE_OUTBOX=True, QUEUED_STORAGE_WORKER_DISPATCH=False
    ):
        yield


@pytest.fixture
def queued_signals():
    seen = []

    def receiver(sender, **kwargs):
        seen.append(kwargs["name"])

    file_queued.connect(receiver)
    yield seen
    file_queued.disconnect(receiver)


def wait_until(predicate, timeout):
    """Return whether *predicate* came true within *timeout* seconds."""
    try:
        return bool(wait_for(predicate, timeout=timeout))
    except AssertionError:
        return False


def row(storage, name):
    return StoredFile.objects.get(storage=storage.reference, name=name)


def test_save_sends_nothing_and_the_dispatcher_sends_the_message(
    outbox, queue, storage, queued_signals
):
    name = storage.save("a.txt", ContentFile(b"hello"))
    assert queue() == 0
    assert queued_signals == []
    assert row(storage, name).outbox
    assert storage.get_state(name).status == Status.PENDING
    with storage.open(name) as opened:
        assert opened.read() == b"hello"
    assert dispatch.dispatch(storage=storage.reference) == [name]
    assert queue() == 1
    assert queued_signals == [name]
    assert not row(storage, name).outbox
    assert dispatch.dispatch(storage=storage.reference) == []
    assert queue() == 1


@override_settings(QUEUED_STORAGE_OUTBOX=False)
def test_without_the_outbox_save_sends_the_message_itself(queue, storage):
    name = storage.save("b.txt", ContentFile(b"x"))
    assert queue() == 1
    assert not row(storage, name).outbox
    assert dispatch.dispatch(storage=storage.reference) == []


def test_a_rolled_back_save_leaves_nothing_to_send(outbox, queue, storage):
    with pytest.raises(RuntimeError), transaction.atomic():
        storage.save("rolled-back.txt", ContentFile(b"x"))
        raise RuntimeError("roll back")
    assert dispatch.dispatch(storage=storage.reference) == []
    assert queue() == 0


def test_a_delayed_storage_keeps_out_of_the_outbox(outbox, queue, storage):
    storage.delayed = True
    name = storage.save("delayed.txt", ContentFile(b"x"))
    assert not storage.uses_outbox()
    assert not row(storage, name).outbox
    assert dispatch.dispatch(storage=storage.reference) == []
    assert queue() == 0


def test_concurrent_dispatchers_send_each_message_once(outbox, queue, storage):
    names = {storage.save(f"many/{i}.txt", ContentFile(b"x")) for i in range(40)}
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def dispatcher():
        try:
            barrier.wait()
            mine = []
            while sent := dispatch.dispatch(batch=7, storage=storage.reference):
                mine += sent
            results.append(mine)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    sent = [name for mine in results for name in mine]
    assert len(results) == 4
    assert sorted(sent) == sorted(names)
    assert queue() == 40
    assert not StoredFile.objects.filter(storage=storage.reference, outbox=True)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_messages_wait_in_the_outbox_while_the_broker_is_down(
    outbox, queue, storage, servers, caplog
):
    broker = servers["redis"]
    first = storage.save("first.txt", ContentFile(b"1"))
    second = storage.save("second.txt", ContentFile(b"2"))
    broker.stop()
    try:
        with caplog.at_level(logging.ERROR, logger="queued_storage"):
            assert dispatch.dispatch(storage=storage.reference) == []
    finally:
        broker.start()
    assert any("Could not queue the transfer" in r.msg for r in caplog.records)
    assert row(storage, first).outbox and row(storage, second).outbox
    assert sorted(dispatch.dispatch(storage=storage.reference)) == [first, second]
    assert queue() == 2


def test_reconcile_takes_a_file_out_of_the_outbox(outbox, queue, storage):
    name = storage.save("stale.txt", ContentFile(b"x"))
    call_command(
        "queued_storage", "reconcile", "--older-than", "0",
        "--storage", storage.reference, stdout=io.StringIO(),
    )  # fmt: skip
    assert queue() == 1
    assert not row(storage, name).outbox
    assert dispatch.dispatch(storage=storage.reference) == []
    assert queue() == 1


def test_a_row_of_a_storage_no_longer_configured_is_dropped(outbox, caplog):
    StoredFile.objects.create(
        storage="gone", name="old.txt", name_hash="0" * 64, version="v", outbox=True
    )
    with caplog.at_level(logging.WARNING, logger="queued_storage"):
        assert dispatch.dispatch(storage="gone") == []
    assert not StoredFile.objects.get(storage="gone").outbox
    assert any("no longer configured" in r.getMessage() for r in caplog.records)


def test_status_and_the_command_show_and_empty_the_outbox(outbox, queue, storage):
    names = [storage.save(f"cmd/{i}.txt", ContentFile(b"x")) for i in range(3)]
    assert status_counts(storage.reference)["outbox"] == 3
    out = io.StringIO()
    call_command(
        "queued_storage", "dispatch", "--once", "--json",
        "--storage", storage.reference, stdout=out,
    )  # fmt: skip
    assert sorted(json.loads(out.getvalue())["queued"]) == sorted(names)
    assert status_counts(storage.reference)["outbox"] == 0
    assert queue() == 3


def test_the_outbox_needs_the_ledger():
    with override_settings(QUEUED_STORAGE_OUTBOX=True, QUEUED_STORAGE_LEDGER=False):
        assert "queued_storage.E008" in [e.id for e in check_settings()]
    with override_settings(QUEUED_STORAGE_OUTBOX=True):
        assert "queued_storage.E008" not in [e.id for e in check_settings()]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_dispatcher_process_feeds_the_worker_and_stops_on_sigterm(
    outbox, celery_worker, unique
):
    from tests.testapp.models import Document

    process = subprocess.Popen(
        [sys.executable, "-m", "django", "queued_storage", "dispatch",
         "--interval", "0.1"],
        cwd=ROOT, env={**os.environ, "QS_TEST_WORKER": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        docs = [
            Document.objects.create(file=ContentFile(b"d", name=f"{unique}-{i}.txt"))
            for i in range(5)
        ]
        storage = docs[0].file.storage
        remote = lambda: all(storage.using_remote(doc.file.name) for doc in docs)  # noqa: E731
        moved = wait_until(remote, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert moved, output
    assert not StoredFile.objects.filter(storage=storage.reference, outbox=True)
    assert process.returncode == 0, output
    assert "Queued 5 transfers from the outbox." in output


def test_the_admin_filters_the_outbox(
    outbox, queue, storage, client, django_user_model
):
    staff = django_user_model.objects.create_superuser("ob", "ob@example.com", "pw")
    client.force_login(staff)
    waiting = storage.save("waiting.txt", ContentFile(b"x"))
    with override_settings(QUEUED_STORAGE_OUTBOX=False):
        sent = storage.save("sent.txt", ContentFile(b"x"))
    page = client.get("/admin/queued_storage/storedfile/?outbox__exact=1")
    assert page.status_code == 200
    content = page.content.decode()
    assert re.search(r"By\s+in the outbox", content)  # The filter is offered.
    assert waiting in content
    assert sent not in content


def test_status_and_health_show_messages_stuck_in_the_outbox(outbox, queue, storage):
    from datetime import timedelta

    from django.utils import timezone

    from queued_storage import health

    assert health.probe_outbox(5).detail == "empty"
    name = storage.save("stuck.txt", ContentFile(b"x"))
    fresh = health.probe_outbox(5)
    assert fresh.ok and fresh.detail.startswith("1 waiting")
    StoredFile.objects.filter(storage=storage.reference, name=name).update(
        updated=timezone.now() - timedelta(seconds=600)
    )
    out = io.StringIO()
    call_command("queued_storage", "status", "--storage", storage.reference, stdout=out)
    text = out.getvalue()
    assert re.search(r"in the outbox: 1, the oldest for 6\d\d s", text), text
    assert "every Celery worker node sends them" in text
    stuck = health.probe_outbox(5)
    assert (stuck.ok, stuck.warning) == (False, True)
    assert "QUEUED_STORAGE_WORKER_DISPATCH" in stuck.hint
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        assert health.probe_outbox(5).ok


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("QUEUED_STORAGE_OUTBOX", "yes", "queued_storage.E060"),
        ("QUEUED_STORAGE_DISPATCH_INTERVAL", 0, "queued_storage.E061"),
        ("QUEUED_STORAGE_DISPATCH_INTERVAL", "0.2", "queued_storage.E061"),
        ("QUEUED_STORAGE_DISPATCH_INTERVAL", True, "queued_storage.E061"),
    ],
)
def test_checks_report_a_bad_outbox_or_dispatch_interval(setting, value, error):
    with override_settings(**{setting: value}):
        assert error in [e.id for e in check_settings()]
    ids = [e.id for e in check_settings()]
    assert "queued_storage.E060" not in ids and "queued_storage.E061" not in ids


def test_the_default_outbox_is_for_celery_with_the_ledger(storage):
    assert storage.uses_outbox()
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        assert not storage.uses_outbox()
    with override_settings(QUEUED_STORAGE_OUTBOX=False):
        assert not storage.uses_outbox()
    storage.runner = "django_tasks"
    assert not storage.uses_outbox()  # Its enqueue is one INSERT already.
    with override_settings(QUEUED_STORAGE_OUTBOX=True):
        assert storage.uses_outbox()


def test_a_file_deleted_in_the_outbox_is_never_sent(outbox, queue, storage):
    name = storage.save("gone.txt", ContentFile(b"x"))
    storage.delete(name)
    assert dispatch.dispatch(storage=storage.reference) == []
    assert queue() == 0
    assert row(storage, name).status == Status.DELETED
