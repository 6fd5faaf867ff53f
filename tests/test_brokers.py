"""Transfers that outlast the broker's window, on Redis and on RabbitMQ.

Each test runs real ``celery worker`` processes on a queue of its own,
against the suite's Redis (``visibility_timeout`` cut to two seconds) or the
run's RabbitMQ node (``consumer_timeout`` cut to three seconds), with a
remote that takes five seconds per upload and keeps a journal of the uploads
it started and finished. Leases last two seconds. The workers and the test's
own publishes use the broker's configuration as docs/deployment.rst prints
it, read from the page; only the URL and Redis's window are the test's.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from queued_storage import dispatch, enqueue, operations
from queued_storage.models import StoredFile
from queued_storage.signals import file_queued
from queued_storage.state import Status
from tests.conftest import wait_for
from tests.docs_blocks import broker_settings, celery_options
from tests.reliability_app import lease_storage, outage_marker, quorum_queue, uploads
from tests.services import CeleryWorkerProcess

ROOT = Path(__file__).resolve().parent.parent
#: Seconds a worker's lease lasts; the workers renew it every third of that.
LEASE = 2
#: Seconds each upload takes at the slow remote: longer than either window.
UPLOAD = 5
#: Seconds before Redis hands an unacknowledged message to another worker.
VISIBILITY = 2
#: Seconds each upload takes where a test saves several files.
BURST_UPLOAD = 1

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def documented(kind: str, url: str) -> dict[str, Any]:
    """Return the Celery options of docs/deployment.rst's tested configuration
    of *kind* ("redis" or "rabbitmq"), with *url* and the test's window."""
    options = celery_options(broker_settings(kind))
    options["broker_url"] = url
    if kind == "redis":
        options["broker_transport_options"]["visibility_timeout"] = VISIBILITY
    return options


@contextmanager
def publishing_to(options: dict[str, Any]) -> Iterator[None]:
    """Send this process's Celery messages with these broker *options*
    (``broker_url`` and the rest) meanwhile."""
    from tests.celery_app import app

    def drop_pools() -> None:
        # kombu keeps the pools of each URL; the app only forgets its own.
        app._pool = None
        app.amqp._producer_pool = None

    old = {key: app.conf[key] for key in options}
    drop_pools()
    app.conf.update(options)
    try:
        yield
    finally:
        drop_pools()
        app.conf.update(old)


#: The brokers every test runs on, by id: (broker, queue type).
BROKERS = {"redis": ("redis", ""), "rabbitmq": ("rabbitmq", "")}
#: And a RabbitMQ quorum queue that drops a message delivered twice.
QUORUM = {"rabbitmq-quorum": ("rabbitmq", "quorum")}


def on(brokers: dict[str, tuple[str, str]]) -> Any:
    """Run a test once on each of *brokers*."""
    return pytest.mark.parametrize(
        "broker", list(brokers.values()), ids=list(brokers), indirect=True
    )


@pytest.fixture
def broker(request: Any, servers: dict[str, Any], unique: str) -> Iterator[dict]:
    """Yield the broker of the test: its URL, queue and the workers' settings.

    The quorum queue drops a message delivered more than once, as RabbitMQ
    does with a ``x-delivery-limit`` below what a worker needs. A Redis of
    its ``own`` is a private server that the test may stop: the suite's also
    holds the states.
    """
    from tests.celery_app import app
    from tests.services import RedisServer

    kind, queue_type = request.param
    queue = f"brokers-{unique}"
    env = {"QS_TEST_QUEUE": queue}
    if kind == "redis":
        server = servers["redis"]
        if queue_type == "own":
            server = RedisServer().start()
            request.addfinalizer(server.close)
        url = server.url_for(0)
        env["QS_TEST_VISIBILITY_TIMEOUT"] = str(VISIBILITY)
    else:
        server = request.getfixturevalue("rabbitmq")
        url = server.url
    if queue_type == "quorum":
        env["QS_TEST_QUORUM_LIMIT"] = "1"
        app.amqp.queues.add(quorum_queue(queue, 1))
    env.update(QS_TEST_BROKER_URL=url, QS_TEST_BROKER_CONFIG=kind)
    options = documented(kind, url)
    # These scenarios meet the broker where save() publishes its message; the
    # outbox that worker nodes send is tested in test_worker_dispatch.py and,
    # against a refusing queue, below.
    with (
        override_settings(QUEUED_STORAGE_QUEUE=queue, QUEUED_STORAGE_OUTBOX=False),
        publishing_to(options),
    ):
        yield {"kind": kind, "url": url, "queue": queue, "env": env,
               "server": server, **options}  # fmt: skip
    app.amqp.queues.pop(queue, None)


@pytest.fixture
def workers(broker: dict) -> Iterator[Any]:
    """Start worker processes on the test's broker; kill them afterwards."""
    started: list[CeleryWorkerProcess] = []

    def start(*, wait: bool = True, **env: str) -> CeleryWorkerProcess:
        """Start a worker; with *wait*, return once it is ready."""
        worker = CeleryWorkerProcess(
            "tests.reliability_app",
            env={
                "QS_TEST_WORKER": "1", "QS_TEST_LEASE": str(LEASE),
                "QS_TEST_UPLOAD_SECONDS": str(UPLOAD), **broker["env"], **env,
            },
            cwd=ROOT, pool="prefork", concurrency=1, queues=[broker["queue"]],
        )  # fmt: skip
        started.append(worker)
        return worker.start(wait_ready=wait, timeout=60)

    yield start
    for worker in started:
        worker.kill()


def row(name: str) -> StoredFile:
    return StoredFile.objects.get(storage=lease_storage.reference, name=name)


def save(unique: str, label: str) -> str:
    return lease_storage.save(f"{unique}/{label}.bin", ContentFile(os.urandom(2**20)))


def all_logs(started: list[CeleryWorkerProcess]) -> str:
    return "".join(worker.log_text() for worker in started)


def ready(started: list[CeleryWorkerProcess]) -> list[CeleryWorkerProcess]:
    """Wait until each of *started*, started without waiting, is ready."""
    for worker in started:
        worker.wait_for_log(r"\bready\.", timeout=60)
    return started


def assert_alive(started: list[CeleryWorkerProcess]) -> None:
    for worker in started:
        assert worker.is_running(), worker.log_text()[-3000:]
        assert "Unrecoverable error" not in worker.log_text()


@on(BROKERS)
@pytest.mark.timeout(120)
def test_a_transfer_longer_than_the_window_uploads_once_and_workers_stay(
    broker, workers, unique
):
    """Two workers; the upload outlasts the broker's window while copies of
    its message arrive. The copies step aside: one upload, one attempt, and
    both workers still run once the window has passed several times."""
    started = ready([workers(wait=False), workers(wait=False)])
    name = save(unique, "long")
    wait_for(lambda: "Transferring" in all_logs(started), timeout=30)
    version = row(name).version
    for _ in range(3):
        assert enqueue.send(lease_storage, name, version, None) is not None
    wait_for(lambda: "Stepped aside" in all_logs(started), timeout=30)
    assert row(name).attempts == 1
    wait_for(lambda: row(name).status == Status.TRANSFERRED, timeout=60)
    time.sleep(2 * VISIBILITY + 2)  # Let the windows pass again.
    found = row(name)
    assert (found.status, found.attempts, found.lease_owner) == (
        Status.TRANSFERRED, 1, "",
    )  # fmt: skip
    assert uploads(name) == {"start": 1, "done": 1}
    assert_alive(started)
    with lease_storage.open(name) as handle:
        assert len(handle.read()) == 2**20


@on({**BROKERS, **QUORUM})
@pytest.mark.timeout(120)
def test_a_worker_killed_mid_transfer_is_taken_over_once_its_lease_expires(
    broker, workers, unique
):
    """SIGKILL the worker mid-upload. The row stays transferring until its
    lease expires; then status says so, reconcile sends the file again, and
    another worker moves it: two uploads started, one finished, attempts 2."""
    first = workers()
    name = save(unique, "killed")
    wait_for(lambda: uploads(name)["start"] == 1, timeout=30)
    first.kill()
    assert row(name).status == Status.TRANSFERRING
    wait_for(lambda: row(name).lease_expires <= timezone.now(), timeout=3 * LEASE)
    out = io.StringIO()
    call_command("queued_storage", "status", storage=lease_storage.reference,
                 stdout=out)  # fmt: skip
    assert "expired leases: 1" in out.getvalue()
    second = workers()
    assert operations.reconcile(storage=lease_storage.reference) == [name]
    wait_for(lambda: row(name).status == Status.TRANSFERRED, timeout=60)
    assert (row(name).attempts, uploads(name)) == (2, {"start": 2, "done": 1})
    assert_alive([second])


@on(BROKERS)
@pytest.mark.timeout(120)
def test_an_owner_paused_past_its_lease_leaves_the_takeovers_outcome_alone(
    broker, workers, unique
):
    """SIGSTOP the worker mid-upload until its lease expires; reconcile sends
    the file again and a second worker moves it. Resumed, the first worker
    finds its lease lost: its upload leaves no second object at the remote
    and its outcome is not written over the second's."""
    first = workers()
    name = save(unique, "paused")
    with lease_storage.local.open(name) as handle:
        content = handle.read()
    wait_for(lambda: uploads(name)["start"] == 1, timeout=30)
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: row(name).lease_expires <= timezone.now(), timeout=3 * LEASE)
        second = workers()
        assert operations.reconcile(storage=lease_storage.reference) == [name]
        wait_for(lambda: row(name).status == Status.TRANSFERRED, timeout=60)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    moved = row(name)
    assert moved.attempts == 2
    wait_for(lambda: "Discarded" in first.log_text(), timeout=60)
    assert "Lost the lease" in first.log_text()
    found = row(name)
    assert (found.status, found.attempts, found.version, found.lease_owner,
            found.checksum, found.last_error) == (
        Status.TRANSFERRED, 2, moved.version, "", moved.checksum, "",
    )  # fmt: skip
    assert uploads(name)["start"] == 2
    assert lease_storage.remote.listdir(unique)[1] == [Path(name).name]
    with lease_storage.remote.open(name) as handle:
        assert handle.read() == content
    assert_alive([first, second])


@on(BROKERS)
@pytest.mark.timeout(120)
def test_replays_during_an_outage_leave_attempts_and_the_retry_budget_alone(
    broker, workers, unique
):
    """The remote is down: the first attempt fails, and its retry waits in the
    ledger, not in the broker. Twelve copies of the message arrive meanwhile
    and step aside. When the retry is due the dispatcher sends it and it
    moves the file: two attempts, one finished upload."""
    worker = workers(QS_TEST_COUNTDOWN_MAX="0")
    name = f"{unique}/outage.bin"
    outage_marker(name).touch()
    assert save(unique, "outage") == name
    wait_for(lambda: row(name).attempts == 1 and row(name).status == Status.PENDING,
             timeout=30)  # fmt: skip
    failed = row(name)
    assert failed.outbox and failed.next_attempt > timezone.now()
    assert "down" in failed.last_error
    for _ in range(12):
        assert enqueue.send(lease_storage, name, failed.version, None) is not None
    # A broker may deliver a copy more than once: at least twelve arrive.
    wait_for(lambda: worker.log_text().count("Stepped aside") >= 12, timeout=30)
    assert (row(name).attempts, row(name).status) == (1, Status.PENDING)
    assert uploads(name) == {"start": 1, "done": 0}
    outage_marker(name).unlink()
    # As if the retry's delay had passed.
    StoredFile.objects.filter(pk=failed.pk).update(
        next_attempt=timezone.now() - timedelta(seconds=1)
    )
    # The dispatcher sends the due retry, unless a copy still on its way
    # (the broker redelivers what a worker held back) takes it first.
    assert dispatch.dispatch(storage=lease_storage.reference) in ([name], [])
    wait_for(lambda: row(name).status == Status.TRANSFERRED, timeout=60)
    assert (row(name).attempts, uploads(name)) == (2, {"start": 2, "done": 1})
    assert_alive([worker])


@pytest.fixture
def queued() -> Iterator[list[str]]:
    """Collect the names that ``file_queued`` reports as queued."""
    names: list[str] = []

    def receiver(sender: Any, name: str, **kwargs: Any) -> None:
        names.append(name)

    file_queued.connect(receiver, weak=False)
    yield names
    file_queued.disconnect(receiver)


@on({"rabbitmq": BROKERS["rabbitmq"]})
@pytest.mark.timeout(180)
def test_a_save_while_rabbitmq_is_down_is_recovered_by_reconcile(
    broker, workers, rabbitmq, queued, unique
):
    """RabbitMQ stops under an open connection: the publish of the next save
    is never confirmed, so save() does not report it queued, and the file
    stays pending and served locally. Once the node is back, reconcile sends
    it and a worker moves it, once."""
    assert broker["broker_transport_options"] == {"confirm_publish": True}
    before = save(unique, "before")  # Leaves a pooled connection open.
    assert queued == [before]
    rabbitmq.stop()
    try:
        name = save(unique, "no-broker")
        assert row(name).status == Status.PENDING
        assert queued == [before]
        with lease_storage.open(name) as handle:
            assert len(handle.read()) == 2**20
    finally:
        rabbitmq.start()
    worker = workers(QS_TEST_UPLOAD_SECONDS=str(BURST_UPLOAD))
    # The message of the first save outlived the restart; reconcile may send
    # it again: a copy finds the file leased or moved, and does nothing.
    sent = operations.reconcile(timedelta(0), storage=lease_storage.reference)
    assert name in sent
    wait_for(lambda: {row(n).status for n in (before, name)} == {Status.TRANSFERRED},
             timeout=60)  # fmt: skip
    for each in (before, name):
        assert (row(each).attempts, uploads(each)) == (1, {"start": 1, "done": 1})
    assert_alive([worker])


@on({"rabbitmq": BROKERS["rabbitmq"]})
@pytest.mark.timeout(60)
def test_a_publish_rabbitmq_refuses_is_not_reported_as_queued(broker, queued, unique):
    """A queue that is full refuses new messages (``reject-publish``): with
    the documented ``confirm_publish`` RabbitMQ's refusal reaches save() and
    the dispatcher, which leave the file pending for reconcile or in the
    outbox; without it the refused
    message is taken as sent, and the file waits with nothing in the queue."""
    from kombu import Queue

    from tests.celery_app import app

    arguments = {"x-max-length": 0, "x-overflow": "reject-publish"}
    app.amqp.queues.add(
        Queue(broker["queue"], routing_key=broker["queue"], queue_arguments=arguments)
    )
    name = save(unique, "refused")
    assert (row(name).status, queued) == (Status.PENDING, [])
    # Only this test's dispatch() may claim the row: the dispatcher of the
    # suite's worker thread, in this process, stays out.
    with override_settings(
        QUEUED_STORAGE_OUTBOX=True, QUEUED_STORAGE_WORKER_DISPATCH=False
    ):
        held = save(unique, "outbox")
        assert row(held).outbox
        # The dispatcher's publish is refused too: the row stays in the outbox.
        assert dispatch.dispatch(storage=lease_storage.reference) == []
    assert (row(held).status, row(held).outbox, queued) == (Status.PENDING, True, [])
    with publishing_to({"broker_transport_options": {}}):
        lost = save(unique, "unconfirmed")
    assert queued == [lost]  # Reported queued, and yet:
    with app.connection_for_write() as connection:
        declared = connection.default_channel.queue_declare(
            broker["queue"], passive=True
        )
    assert declared.message_count == 0


@on({**QUORUM, "redis": ("redis", "own")})
@pytest.mark.timeout(240)
def test_a_broker_restart_during_a_burst_of_saves_moves_every_file_once(
    broker, workers, queued, unique
):
    """Two workers; three saves, the broker stops (by its PID) while a
    transfer runs, two saves while it is down, it starts again, three more
    saves. The two saves made meanwhile were not reported queued. The
    workers reconnect and move the files saved after the restart. Redis,
    without persistence, loses the messages it held; the quorum queue keeps
    those it confirmed, but drops one that a worker had fetched and handed
    back when the connection broke (its x-delivery-limit is 1). Reconcile
    sends the files saved while the broker was down and those whose message
    was lost, and each file is uploaded once."""
    started = ready(
        [workers(wait=False, QS_TEST_UPLOAD_SECONDS=str(BURST_UPLOAD)) for _ in "ab"]
    )
    before = [save(unique, f"before-{index}") for index in range(3)]
    wait_for(lambda: any(uploads(name)["start"] for name in before), timeout=30)
    broker["server"].stop()
    try:
        down = [save(unique, f"down-{index}") for index in range(2)]
    finally:
        broker["server"].start()
    after = [save(unique, f"after-{index}") for index in range(3)]
    assert queued == before + after

    def moved(names: list[str]) -> bool:
        return all(row(name).status == Status.TRANSFERRED for name in names)

    def settled(name: str) -> bool:
        return row(name).status in (Status.TRANSFERRED, Status.PENDING)

    wait_for(lambda: moved(after) and all(map(settled, before)), timeout=120,
             interval=0.5)  # fmt: skip
    assert {row(name).status for name in down} == {Status.PENDING}
    lost = {name for name in before if row(name).status == Status.PENDING}
    if broker["kind"] == "rabbitmq":
        # At most the one unacknowledged message each worker may hold.
        assert len(lost) <= len(started)
    sent = operations.reconcile(timedelta(0), storage=lease_storage.reference)
    # A message of a lost file may still arrive: its copy steps aside.
    assert set(down) <= set(sent) <= set(down) | lost
    wait_for(lambda: moved(before + after + down), timeout=60, interval=0.5)
    for name in before + after + down:
        assert (row(name).attempts, uploads(name)) == (1, {"start": 1, "done": 1})
    assert_alive(started)


@on({"redis": BROKERS["redis"], **QUORUM})
@pytest.mark.timeout(120)
def test_retries_sent_with_a_countdown_through_an_outage_move_the_file_once(
    broker, workers, unique
):
    """The remote is down; retries travel as messages with a countdown (at
    most two seconds, below a three-second window on either broker), held by
    the worker until due. Once the remote is back a retry moves the file,
    in an upload longer than the window: every attempt counted is an upload
    started, one finished, and the worker still runs."""
    worker = workers(QS_TEST_COUNTDOWN_MAX="2", QS_TEST_VISIBILITY_TIMEOUT="3")
    name = f"{unique}/countdown.bin"
    outage_marker(name).touch()
    assert save(unique, "countdown") == name
    wait_for(lambda: row(name).attempts >= 1 and row(name).status == Status.PENDING,
             timeout=30)  # fmt: skip
    failed = row(name)
    # The retry is a message in the broker, not one the ledger holds back.
    assert (failed.outbox, "down" in failed.last_error) == (False, True)
    outage_marker(name).unlink()
    wait_for(lambda: row(name).status == Status.TRANSFERRED, timeout=60)
    found = row(name)
    assert found.attempts >= 2
    assert uploads(name) == {"start": found.attempts, "done": 1}
    assert "retrying in" in worker.log_text()
    assert_alive([worker])


@on({"redis": BROKERS["redis"]})
@pytest.mark.timeout(150)
def test_a_worker_killed_mid_message_of_files_leaves_the_rest_to_reconcile(
    broker, workers, unique
):
    """SIGKILL the worker after three of the ten files of one message. Each
    file that was done stays done; ``reconcile`` and another worker move the
    rest: every file ends transferred, with one finished upload each."""
    with override_settings(QUEUED_STORAGE_OUTBOX=True):
        names = [
            lease_storage.save(f"{unique}/m{i}.bin", ContentFile(b"x" * 1000))
            for i in range(10)
        ]
        # One message of the ten, before any worker node could split them.
        sent = dispatch.dispatch(storage=lease_storage.reference, spread=1)
    assert sorted(sent) == sorted(names)
    first = workers(QS_TEST_UPLOAD_SECONDS="0.5")
    done = StoredFile.objects.filter(
        storage=lease_storage.reference, name__in=names, status=Status.TRANSFERRED
    )
    wait_for(lambda: done.count() >= 3, timeout=60, interval=0.01)
    first.kill()
    finished = set(done.values_list("name", flat=True))
    assert 3 <= len(finished) < 10
    # The file in hand when the worker died keeps its lease until it expires.
    wait_for(
        lambda: (
            not StoredFile.objects.filter(
                name__in=names, lease_expires__gt=timezone.now()
            ).exists()
        ),
        timeout=3 * LEASE,
    )
    second = workers(QS_TEST_UPLOAD_SECONDS="0.1")
    recovered = operations.reconcile(
        older_than=timedelta(0), storage=lease_storage.reference
    )
    assert sorted(recovered) == sorted(set(names) - finished)
    wait_for(lambda: done.count() == 10, timeout=60)
    assert all(uploads(name)["done"] == 1 for name in names)
    assert all(uploads(name) == {"start": 1, "done": 1} for name in finished)
    assert_alive([second])
