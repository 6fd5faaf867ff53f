"""The dispatcher inside every Celery worker node, with real worker processes.

Each test saves files into the outbox with the test process's own dispatcher
off, so that only the worker nodes it starts send their messages. A node
whose dispatcher sends to a queue no worker consumes lets the test count the
messages it sent.
"""

from __future__ import annotations

import ast
import io
import json
import signal
from pathlib import Path

import pytest
import redis
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import override_settings

from queued_storage.models import StoredFile
from queued_storage.state import Status
from tests.conftest import wait_for
from tests.services import CeleryWorkerProcess
from tests.testapp.models import fs_storage

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def node(queue: str, *, sends_to: str | None = None, **env: str) -> CeleryWorkerProcess:
    """Return a worker node consuming *queue*; its dispatcher sends to *sends_to*."""
    return CeleryWorkerProcess(
        "tests.celery_app",
        env={"QS_TEST_WORKER": "1", "QS_TEST_QUEUE": sends_to or queue, **env},
        cwd=ROOT,
        pool="prefork",
        concurrency=1,
        queues=queue,
    )


@pytest.fixture
def broker(servers):
    client = redis.Redis.from_url(servers["redis"].url_for(0))
    yield client
    client.close()


@pytest.fixture
def quiet(unique):
    """Saves go to the outbox; this process's own dispatcher stays out."""
    with override_settings(
        QUEUED_STORAGE_OUTBOX=None,
        QUEUED_STORAGE_WORKER_DISPATCH=False,
        QUEUED_STORAGE_QUEUE=f"nobody-{unique}",
    ):
        yield


def save_many(unique: str, count: int) -> list[str]:
    return [
        fs_storage.save(f"wd/{unique}/{i}.txt", ContentFile(f"file {i}".encode()))
        for i in range(count)
    ]


def waiting(names: list[str]) -> int:
    return StoredFile.objects.filter(
        storage=fs_storage.reference, name__in=names, outbox=True
    ).count()


def all_transferred(names: list[str]) -> bool:
    rows = StoredFile.objects.filter(storage=fs_storage.reference, name__in=names)
    return rows.filter(status=Status.TRANSFERRED).count() == len(names)


def sent_names(broker: redis.Redis, queue: str) -> list[str]:
    """Return the file names of the messages waiting in *queue*."""
    names = []
    for raw in broker.lrange(queue, 0, -1):
        headers = json.loads(raw)["headers"]
        kwargs = ast.literal_eval(headers["kwargsrepr"])
        if "files" in kwargs:  # Small files share messages.
            names += [name for name, _ in kwargs["files"]]
        else:
            names.append(kwargs["name"])
    return names


def test_a_worker_node_sends_the_outbox_and_its_files_end_transferred(quiet, unique):
    # More small files than a pass spreads over: they share messages.
    names = save_many(unique, 30)
    assert waiting(names) == 30  # save() sent nothing.
    with node(f"wd-{unique}") as worker:
        wait_for(lambda: all_transferred(names), timeout=60)
    assert waiting(names) == 0
    log = worker.log_text()
    assert "The outbox dispatcher runs in this worker node." in log
    for name in names:
        assert f"Transferred '{name}'" in log
    rows = StoredFile.objects.filter(storage=fs_storage.reference, name__in=names)
    assert set(rows.values_list("attempts", flat=True)) == {1}


def test_a_worker_node_stops_its_dispatcher_and_leaves_unclaimed_rows(
    quiet, unique, broker
):
    unread = f"unread-{unique}"
    worker = node(f"wd-{unique}", sends_to=unread).start()
    try:
        first = save_many(unique, 3)
        wait_for(lambda: waiting(first) == 0, timeout=30)
    finally:
        worker.stop()
    assert worker.returncode == 0
    log = worker.log_text()
    assert "The outbox dispatcher stopped; it queued 3." in log
    assert sorted(sent_names(broker, unread)) == sorted(first)
    # Saved after the node stopped: nothing claims them, they stay waiting.
    later = [fs_storage.save(f"wd/{unique}/late.txt", ContentFile(b"late"))]
    assert waiting(later) == 1
    broker.delete(unread)


def test_two_worker_nodes_sharing_one_ledger_send_each_message_once(
    quiet, unique, broker
):
    unread = f"unread-{unique}"
    names = save_many(unique, 120)
    nodes = [node(f"wd-{unique}-{n}", sends_to=unread) for n in range(2)]
    try:
        for worker in nodes:
            worker.start(wait_ready=False)
        wait_for(lambda: waiting(names) == 0, timeout=60)
    finally:
        for worker in nodes:
            worker.stop()
    sent = sent_names(broker, unread)
    messages = broker.llen(unread)
    broker.delete(unread)
    assert len(sent) == len(names)
    assert sorted(sent) == sorted(names)
    assert messages < len(names)  # Small files shared messages.
    for worker in nodes:
        assert "The outbox dispatcher runs in this worker node." in worker.log_text()


def test_a_node_killed_while_dispatching_leaves_every_file_to_be_transferred(
    quiet, unique
):
    queue = f"wd-{unique}"
    names = save_many(unique, 150)
    killed = node(queue).start(wait_ready=False)
    try:
        # Killed once it has claimed some rows but not all.
        wait_for(lambda: waiting(names) < len(names), timeout=60, interval=0.005)
    finally:
        killed.kill()
    assert killed.returncode == -signal.SIGKILL
    # A claimed row whose message was lost is pending with no message:
    # reconcile sends it again; the next node sends what is still waiting.
    out = io.StringIO()
    with override_settings(QUEUED_STORAGE_QUEUE=queue):
        call_command(
            "queued_storage", "reconcile", "--older-than", "0",
            "--storage", fs_storage.reference, stdout=out,
        )  # fmt: skip
    with node(queue):
        wait_for(lambda: all_transferred(names), timeout=120)
    assert waiting(names) == 0
