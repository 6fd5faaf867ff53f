"""Small files share the dispatcher's messages; each keeps its own transfer.

The dispatcher sends to a Redis queue that nobody consumes, so the test can
read the messages it sent; the workers' side runs the task's ``run()`` on
those very messages, as a worker process does with what it receives.
"""

from __future__ import annotations

import base64
import json

import pytest
import redis
from django.core.files.base import ContentFile
from django.test import override_settings

from queued_storage import dispatch, message
from queued_storage.exceptions import InvalidMessage
from queued_storage.models import StoredFile
from queued_storage.state import Status
from queued_storage.tasks import get_task

pytestmark = pytest.mark.django_db(transaction=True)

TASK = "queued_storage.tasks.Transfer"


@pytest.fixture
def queue(unique, servers):
    """Send to a queue nobody consumes; return a reader of its messages."""
    name = f"batches-{unique}"
    client = redis.Redis.from_url(servers["redis"].url_for(0))

    def messages():
        found = []
        for raw in client.lrange(name, 0, -1):
            body = json.loads(base64.b64decode(json.loads(raw)["body"]))
            found.append(body[1])  # Celery's body: args, kwargs, options.
        return found

    with override_settings(
        QUEUED_STORAGE_QUEUE=name,
        QUEUED_STORAGE_OUTBOX=True,
        QUEUED_STORAGE_WORKER_DISPATCH=False,
    ):
        yield messages
    client.delete(name)


@pytest.fixture
def storage(fs_queued, unique):
    return fs_queued(reference=f"batches-{unique}")


def names_of(messages):
    """Return every file a list of messages names, in order."""
    names = []
    for kwargs in messages:
        if "files" in kwargs:
            names += [name for name, _ in kwargs["files"]]
        else:
            names.append(kwargs["name"])
    return names


def save_many(storage, count, size=10):
    return [
        storage.save(f"small/{i:03d}.bin", ContentFile(b"x" * size))
        for i in range(count)
    ]


def test_a_pass_spreads_small_files_over_eight_messages(queue, storage):
    names = save_many(storage, 30)
    assert sorted(dispatch.dispatch(storage=storage.reference)) == sorted(names)
    sent = queue()
    assert len(sent) == 8
    assert sorted(names_of(sent)) == sorted(names)
    assert all(len(kwargs["files"]) in (3, 4) for kwargs in sent)
    # Each message verifies as the worker does, and names files as recorded.
    versions = dict(
        StoredFile.objects.filter(storage=storage.reference).values_list(
            "name", "version"
        )
    )
    for kwargs in sent:
        reference, files = message.verify_files(TASK, kwargs)
        assert reference == storage.reference
        assert all(versions[name] == version for name, version in files)
    assert not StoredFile.objects.filter(storage=storage.reference, outbox=True)


def test_a_full_pass_fills_messages_up_to_the_setting(queue, storage):
    names = save_many(storage, 95)
    with override_settings(QUEUED_STORAGE_DISPATCH_FILES=20):
        dispatch.dispatch(storage=storage.reference)
    sent = queue()
    # 95 files at most 20 a message: 5 messages, but never fewer than 8.
    assert len(sent) == 8
    assert sorted(names_of(sent)) == sorted(names)
    more = [storage.save(f"more/{i}.bin", ContentFile(b"y")) for i in range(95)]
    dispatch.dispatch(storage=storage.reference)
    sent = [kwargs for kwargs in queue() if names_of([kwargs])[0] in more]
    assert len(sent) == 10  # 95 files at most 10 a message.
    assert max(len(kwargs["files"]) for kwargs in sent) == 10
    assert sorted(names_of(sent)) == sorted(more)


def test_large_files_travel_alone_and_one_file_a_message_turns_it_off(queue, storage):
    big = storage.save("big.bin", ContentFile(b"z" * (dispatch.SMALL_FILE + 1)))
    small = save_many(storage, 9)
    dispatch.dispatch(storage=storage.reference, spread=1)
    sent = queue()
    assert len(sent) == 2
    alone = [kwargs for kwargs in sent if "name" in kwargs]
    assert [kwargs["name"] for kwargs in alone] == [big]
    assert sorted(names_of(sent)) == sorted([big, *small])
    with override_settings(QUEUED_STORAGE_DISPATCH_FILES=1):
        later = [storage.save(f"one/{i}.bin", ContentFile(b"w")) for i in range(12)]
        dispatch.dispatch(storage=storage.reference, spread=1)
    singles = [kwargs for kwargs in queue() if names_of([kwargs])[0] in later]
    assert len(singles) == 12
    assert all("name" in kwargs for kwargs in singles)
    assert sorted(names_of(singles)) == sorted(later)


def test_a_stopped_pass_puts_the_files_it_did_not_send_back(queue, storage):
    names = save_many(storage, 16)
    asked = []

    def stop():
        asked.append(1)
        return len(asked) > 1  # Send the first message only.

    sent_now = dispatch.dispatch(storage=storage.reference, stop=stop)
    assert len(queue()) == 1
    assert sent_now == names_of(queue())
    waiting = StoredFile.objects.filter(storage=storage.reference, outbox=True)
    assert sorted(waiting.values_list("name", flat=True)) == sorted(
        set(names) - set(sent_now)
    )
    # The next pass sends the rest, each once.
    dispatch.dispatch(storage=storage.reference)
    assert sorted(names_of(queue())) == sorted(names)


def test_a_message_of_several_files_moves_each_and_a_bad_one_stops_no_other(
    queue, storage
):
    names = save_many(storage, 12, size=100)
    storage.local.delete(names[5])  # Its transfer fails: no local copy.
    dispatch.dispatch(storage=storage.reference, spread=1)
    sent = queue()
    assert len(sent) == 2  # 12 files, at most 10 a message.
    task = get_task(TASK)
    outcomes = [task.run(**kwargs) for kwargs in sent]
    assert sorted(outcomes) == [False, True]  # The message with the bad file.
    rows = dict(
        StoredFile.objects.filter(storage=storage.reference).values_list(
            "name", "status"
        )
    )
    assert rows[names[5]] != Status.TRANSFERRED
    for name in names[:5] + names[6:]:
        assert rows[name] == Status.TRANSFERRED, name
        assert storage.remote.exists(name)
    assert not storage.remote.exists(names[5])
    attempts = StoredFile.objects.filter(
        storage=storage.reference, name__in=names
    ).values_list("attempts", flat=True)
    assert set(attempts) == {1}


# The message itself ------------------------------------------------------------


def test_a_message_of_files_verifies_and_refuses_any_change():
    files = [("a.txt", "v1"), ("b.txt", "v2")]
    kwargs = message.sign_files(TASK, "store", files)
    assert message.verify_files(TASK, kwargs) == ("store", files)
    changed = [
        {**kwargs, "files": [["a.txt", "v1"]]},
        {**kwargs, "files": [["b.txt", "v2"], ["a.txt", "v1"]]},
        {**kwargs, "files": [["a.txt", "v1"], ["c.txt", "v2"]]},
        {**kwargs, "storage": "other"},
    ]
    for forged in changed:
        with pytest.raises(InvalidMessage, match="differ"):
            message.verify_files(TASK, forged)
    with pytest.raises(InvalidMessage, match="differ"):
        message.verify_files("another.Task", kwargs)


@pytest.mark.parametrize(
    "files",
    [
        [],
        [["a", "v"]] * (message.MAX_FILES + 1),
        [["a", "v", "x"]],
        [["a", 1]],
        "a.txt",
        [{"name": "a", "version": "v"}],
    ],
)
def test_a_message_of_files_of_another_shape_is_refused(files):
    kwargs = {"storage": "store", "files": files, "signature": "x"}
    with pytest.raises(InvalidMessage, match="another type"):
        message.verify_files(TASK, kwargs)


def test_a_one_file_signature_does_not_sign_a_list():
    single = message.sign(TASK, "store", "a.txt", "v1")
    forged = {
        "storage": "store", "files": [["a.txt", "v1"]],
        "signature": single["signature"],
    }  # fmt: skip
    with pytest.raises(InvalidMessage):
        message.verify_files(TASK, forged)


def test_too_many_files_are_not_signed():
    with pytest.raises(ValueError):
        message.sign_files(TASK, "store", [("a", "v")] * (message.MAX_FILES + 1))


@pytest.mark.parametrize("value", [0, 101, "10", 2.5, True])
def test_checks_report_a_bad_number_of_files_a_message(value):
    from queued_storage.checks import check_settings

    with override_settings(QUEUED_STORAGE_DISPATCH_FILES=value):
        assert "queued_storage.E062" in [m.id for m in check_settings()]


def test_a_pass_takes_no_more_rows_than_its_batch(queue, storage):
    names = save_many(storage, 30)
    first = dispatch.dispatch(batch=7, storage=storage.reference)
    assert len(first) == 7
    assert first == names[:7]  # The oldest first.
    waiting = StoredFile.objects.filter(storage=storage.reference, outbox=True)
    assert waiting.count() == 23
    assert sorted(names_of(queue())) == sorted(first)


def test_a_forged_message_of_files_is_refused_and_changes_nothing(
    queue, storage, caplog
):
    from celery.exceptions import Reject

    names = save_many(storage, 3)
    dispatch.dispatch(storage=storage.reference, spread=1)
    (kwargs,) = queue()
    task = get_task(TASK)
    huge = [["x" * 1000, "v"]] * 100_000
    forged = [
        {**kwargs, "files": kwargs["files"][:2]},
        {**kwargs, "files": [*kwargs["files"], ["small/999.bin", "v"]]},
        {**kwargs, "signature": kwargs["signature"][:-2] + "xx"},
        {**kwargs, "files": huge},
        {**kwargs, "extra": 1},
    ]
    for message_kwargs in forged:
        with pytest.raises(Reject):
            task.run(**message_kwargs)
    rows = StoredFile.objects.filter(storage=storage.reference)
    assert set(rows.values_list("status", "attempts")) == {(Status.PENDING, 0)}
    assert not any(storage.remote.exists(name) for name in names)
    assert max(len(r.getMessage()) for r in caplog.records) < 8000


def test_a_replayed_message_of_files_uploads_nothing_again(queue, storage):
    names = save_many(storage, 4)
    dispatch.dispatch(storage=storage.reference, spread=1)
    (kwargs,) = queue()
    task = get_task(TASK)
    assert task.run(**kwargs) is True
    mtimes = {name: storage.remote.get_modified_time(name) for name in names}
    assert task.run(**kwargs) is True  # Already transferred: done.
    rows = StoredFile.objects.filter(storage=storage.reference)
    assert set(rows.values_list("status", "attempts")) == {(Status.TRANSFERRED, 1)}
    assert {n: storage.remote.get_modified_time(n) for n in names} == mtimes


# Attacks on a pass between its claim and its messages ---------------------------


@pytest.mark.parametrize("value", ["10", None, 0, 500, 2.5])
def test_a_bad_number_of_files_a_message_takes_nothing_from_the_outbox(
    queue, storage, value
):
    from django.core.exceptions import ImproperlyConfigured

    names = save_many(storage, 12)
    with override_settings(QUEUED_STORAGE_DISPATCH_FILES=value):
        with pytest.raises(ImproperlyConfigured, match="DISPATCH_FILES"):
            dispatch.dispatch(batch=1000, storage=storage.reference)
    assert queue() == []
    waiting = StoredFile.objects.filter(storage=storage.reference, outbox=True)
    assert sorted(waiting.values_list("name", flat=True)) == sorted(names)


def test_an_error_after_a_message_puts_the_later_files_back(queue, storage):
    from queued_storage.signals import file_queued

    names = save_many(storage, 16)

    def failing(sender, **kwargs):
        raise RuntimeError("a receiver failed")

    file_queued.connect(failing)
    try:
        with pytest.raises(RuntimeError):
            dispatch.dispatch(storage=storage.reference)
    finally:
        file_queued.disconnect(failing)
    (first,) = queue()  # The first message went; the receiver then failed.
    waiting = StoredFile.objects.filter(storage=storage.reference, outbox=True)
    assert sorted(waiting.values_list("name", flat=True)) == sorted(
        set(names) - set(names_of([first]))
    )
    dispatch.dispatch(storage=storage.reference)
    assert sorted(names_of(queue())) == sorted(names)


@pytest.mark.parametrize("change", ["save", "delete"])
def test_a_file_changed_between_the_claim_and_its_message_is_not_lost(
    queue, storage, change
):
    names = save_many(storage, 3, size=100)
    target = names[1]

    def stop():
        # Runs after the pass took its rows, before it sends their message.
        if change == "save":
            storage.delete(target)
            assert storage.save(target, ContentFile(b"new")) == target
        else:
            storage.delete(target)
        return False

    dispatch.dispatch(storage=storage.reference, stop=stop, spread=1)
    (kwargs,) = queue()
    task = get_task(TASK)
    task.run(**kwargs)  # The old version of the target steps aside.
    assert not storage.remote.exists(target)
    for name in set(names) - {target}:
        assert storage.remote.exists(name)
    changed = StoredFile.objects.get(storage=storage.reference, name=target)
    if change == "delete":
        assert changed.status == Status.DELETED
        dispatch.dispatch(storage=storage.reference)
        assert len(queue()) == 1
        return
    # The new version waits in the outbox and goes in the next pass.
    assert (changed.status, changed.outbox, changed.attempts) == (
        Status.PENDING, True, 0,
    )  # fmt: skip
    dispatch.dispatch(storage=storage.reference)
    later = [sent for sent in queue() if sent != kwargs]
    assert names_of(later) == [target]
    for kwargs in later:
        task.run(**kwargs)
    with storage.remote.open(target) as handle:
        assert handle.read() == b"new"


def test_a_message_naming_a_file_twice_uploads_it_once(queue, storage):
    names = save_many(storage, 2)
    versions = dict(
        StoredFile.objects.filter(storage=storage.reference).values_list(
            "name", "version"
        )
    )
    other = f"{storage.reference}-not"
    files = [(names[0], versions[names[0]])] * 3 + [
        (names[1], versions[names[1]]),
        ("../escape.bin", "v"),
        ("small/does-not-exist.bin", "v"),
    ]
    task = get_task(TASK)
    kwargs = message.sign_files(TASK, storage.reference, files)
    assert task.run(**kwargs) is False  # Two of the names are not transferred.
    rows = StoredFile.objects.filter(storage=storage.reference)
    assert set(rows.values_list("status", "attempts")) == {(Status.TRANSFERRED, 1)}
    assert rows.count() == 2
    assert all(storage.remote.exists(name) for name in names)
    # A message of a storage the worker does not know is refused whole.
    from celery.exceptions import Reject

    with pytest.raises(Reject):
        task.run(**message.sign_files(TASK, other, files[:1]))


def test_without_returning_each_file_is_claimed_and_sent_once(queue, storage):
    from django.db import connection

    from queued_storage.ledger_sql import statements

    sql = statements(connection.alias)
    if sql is None:
        pytest.skip("The database has no written-out statements.")
    names = save_many(storage, 12)
    original = sql.lease_returning_sql
    sql.lease_returning_sql = None  # As SQLite before 3.35.
    try:
        first = dispatch.dispatch(batch=5, storage=storage.reference)
        rest = dispatch.dispatch(batch=100, storage=storage.reference)
        assert dispatch.dispatch(storage=storage.reference) == []
    finally:
        sql.lease_returning_sql = original
    assert first == names[:5]
    assert sorted(first + rest) == sorted(names)
    sent = queue()
    assert all("name" in kwargs for kwargs in sent)  # One file a message.
    assert sorted(names_of(sent)) == sorted(names)
    assert not StoredFile.objects.filter(storage=storage.reference, outbox=True)


def test_a_retry_due_from_the_ledger_travels_alone(queue, storage):
    from datetime import timedelta

    from django.utils import timezone

    names = save_many(storage, 5)
    # As a long retry leaves a file: an attempt counted, flagged, now due.
    StoredFile.objects.filter(storage=storage.reference, name=names[2]).update(
        attempts=1, next_attempt=timezone.now() - timedelta(seconds=1)
    )
    dispatch.dispatch(storage=storage.reference, spread=1)
    sent = queue()
    alone = [kwargs for kwargs in sent if "name" in kwargs]
    assert [kwargs["name"] for kwargs in alone] == [names[2]]
    assert len(sent) == 2
    assert sorted(names_of(sent)) == sorted(names)


def test_racing_passes_each_take_at_most_their_batch_and_send_each_file_once(
    queue, storage
):
    import threading

    from django.db import connections

    names = save_many(storage, 60)
    passes: list[list[str]] = []
    barrier = threading.Barrier(4)

    def dispatcher():
        try:
            barrier.wait()
            for _ in range(60):  # Bounded: at least a file a pass.
                sent = dispatch.dispatch(batch=7, storage=storage.reference)
                if not sent:
                    break
                passes.append(sent)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert max(len(sent) for sent in passes) <= 7
    assert sorted(name for sent in passes for name in sent) == sorted(names)
    assert sorted(names_of(queue())) == sorted(names)


def test_a_worker_node_pass_puts_its_rows_back_once_its_dispatch_is_off(queue, storage):
    from queued_storage.runners.celery_node import DispatcherThread
    from tests.celery_app import app

    names = save_many(storage, 5)
    thread = DispatcherThread(app)
    # The fixture turns the worker nodes' dispatch off: what a pass took as
    # that happened goes back to the outbox unsent.
    assert thread.off()
    assert dispatch.dispatch(storage=storage.reference, stop=thread.off) == []
    assert queue() == []
    waiting = StoredFile.objects.filter(storage=storage.reference, outbox=True)
    assert sorted(waiting.values_list("name", flat=True)) == sorted(names)
    with override_settings(QUEUED_STORAGE_WORKER_DISPATCH=True):
        assert not thread.off()
