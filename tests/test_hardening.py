"""Hostile messages, hand-made admin requests and races, against real parts.

The periodic reconcile task takes no widening argument from its unsigned
message; admin actions need the change permission; TransferAndDelete and a
failed save remove only what is theirs; a forged message makes a bounded
log record.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery.signals import task_postrun
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage
from django.test import override_settings
from django.utils import timezone

from queued_storage import message, operations
from queued_storage.backends import QueuedStorage
from queued_storage.models import StoredFile
from queued_storage.state import FileState, Status
from queued_storage.tasks import TransferAndDelete
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

FS = "django.core.files.storage.FileSystemStorage"
RECONCILE = "queued_storage.tasks.reconcile"
TRANSFER = "queued_storage.tasks.Transfer"


@pytest.fixture
def broker(servers: dict[str, Any]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{servers['redis'].url}/0")
    yield client
    client.close()


@pytest.fixture
def lost_queue(unique: str, broker: redis.Redis) -> Iterator[str]:
    """A queue no worker consumes: transfer messages sent there are counted.

    Saves send their messages themselves, at once, as these tests count them.
    """
    queue = f"unconsumed-{unique}"
    with override_settings(QUEUED_STORAGE_QUEUE=queue, QUEUED_STORAGE_OUTBOX=False):
        yield queue
    broker.delete(queue)


def make_storage(tmp_path: Any, unique: str, **options: Any) -> QueuedStorage:
    local_options = options.pop("local_options", {})
    return QueuedStorage(
        local=options.pop("local", FS),
        remote=FS,
        local_options={"location": str(tmp_path / "local"), **local_options},
        remote_options={"location": str(tmp_path / "remote")},
        reference=f"hardening-{unique}",
        **options,
    )


# The periodic reconcile task ------------------------------------------------


class Finished(list[str]):
    """The ids of the *name* tasks that the worker (a thread) has finished."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        task_postrun.connect(self.note, weak=False)

    def note(self, sender: Any = None, task_id: str = "", **kwargs: Any) -> None:
        if getattr(sender, "name", "") == self.name:
            self.append(task_id)

    def close(self) -> None:
        task_postrun.disconnect(self.note)


def test_reconcile_task_takes_no_widening_argument_from_unsigned_messages(
    celery_worker: Any,
    celery_app: Any,
    tmp_path: Any,
    unique: str,
    lost_queue: str,
    broker: redis.Redis,
) -> None:
    """Hostile ``reconcile`` messages queue only the one stale pending file,
    once: not the fresh ones, not the one that is transferring."""
    storage = make_storage(tmp_path, unique)
    names = [storage.save(f"r{i}.txt", ContentFile(b"x")) for i in range(5)]
    broker.delete(lost_queue)  # Forget the messages of the saves.
    old = timezone.now() - operations.default_age() - timedelta(minutes=5)
    rows = StoredFile.objects.filter(storage=storage.reference)
    rows.filter(name=names[0]).update(updated=old)
    rows.filter(name=names[1]).update(status=Status.TRANSFERRING, updated=old)
    hostile = [
        {"kwargs": {"older_than": -86400}},
        {"args": [-86400]},
        {"kwargs": {"older_than": "-86400", "storage": storage.reference}},
        {"kwargs": {"older_than": float("-inf")}},
        {"kwargs": {"older_than": True}},
        {"kwargs": {"older_than": 10**400}},
        {"kwargs": {"older_than": {"$lt": 1}}},
        {"args": [0, "extra"], "kwargs": {"names": names}},
    ]
    done = Finished(RECONCILE)
    try:
        for fields in hostile:
            celery_app.send_task(RECONCILE, **fields)
        wait_for(lambda: len(done) == len(hostile), timeout=60)
    finally:
        done.close()
    sent = [message_name(raw) for raw in broker.lrange(lost_queue, 0, -1)]
    assert sent == [names[0]]
    assert rows.get(name=names[1]).status == Status.TRANSFERRING


def message_name(raw: bytes) -> str:
    """Return the file name a transfer message in the broker carries."""
    body = json.loads(raw)["body"]
    args, kwargs, _ = json.loads(base64.b64decode(body))
    return str(kwargs["name"])


def test_reconcile_task_accepts_a_longer_age(
    tmp_path: Any, unique: str, lost_queue: str, broker: redis.Redis
) -> None:
    """An ``older_than`` above the default narrows the run, as documented."""
    from queued_storage.tasks import reconcile

    storage = make_storage(tmp_path, unique)
    name = storage.save("stale.txt", ContentFile(b"x"))
    broker.delete(lost_queue)
    old = timezone.now() - operations.default_age() - timedelta(minutes=5)
    StoredFile.objects.filter(name=name).update(updated=old)
    longer = (operations.default_age() + timedelta(hours=1)).total_seconds()
    assert reconcile.run(older_than=longer) == 0
    assert reconcile.run() == 1
    # Its age restarted with the message: a second run sends nothing more.
    assert reconcile.run() == 0
    assert broker.llen(lost_queue) == 1


@pytest.mark.timeout(90)
def test_reconcile_gives_a_file_its_age_back_when_the_broker_is_down(
    tmp_path: Any, unique: str, lost_queue: str, broker: redis.Redis, servers: Any
) -> None:
    from django.conf import settings

    from queued_storage.tasks import reconcile

    storage = make_storage(tmp_path, unique)
    name = storage.save("stale.txt", ContentFile(b"x"))
    old = timezone.now() - operations.default_age() - timedelta(minutes=5)
    StoredFile.objects.filter(name=name).update(updated=old)
    bounded = {
        **settings.CACHES,
        "default": {
            **settings.CACHES["default"],
            "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        },
    }
    server = servers["redis"]
    with override_settings(CACHES=bounded):
        server.stop()
        try:
            assert reconcile.run() == 0
        finally:
            server.start()
    assert StoredFile.objects.get(name=name).updated == old
    broker.delete(lost_queue)
    assert reconcile.run() == 1
    assert [message_name(raw) for raw in broker.lrange(lost_queue, 0, -1)] == [name]


# The admin ------------------------------------------------------------------


@pytest.fixture
def failed_row(tmp_path: Any, unique: str, lost_queue: str) -> Iterator[Any]:
    storage = make_storage(tmp_path, unique)
    name = storage.save("failed.txt", ContentFile(b"x"))
    state = storage.get_state(name)
    storage.state.record(name, state.evolve(status=Status.FAILED, error="boom"))
    yield storage, StoredFile.objects.get(storage=storage.reference, name=name)


def staff(django_user_model: Any, username: str, *codenames: str) -> Any:
    user = django_user_model.objects.create_user(username, password="pw")
    user.is_staff = True
    user.save()
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


CHANGELIST = "/admin/queued_storage/storedfile/"


def act(client: Any, action: str, *pks: int, **extra: Any) -> str:
    data = {"action": action, "_selected_action": list(pks), **extra}
    return client.post(CHANGELIST, data, follow=True).content.decode()


def test_admin_actions_need_the_change_permission(
    client: Any, django_user_model: Any, failed_row: Any
) -> None:
    storage, row = failed_row
    viewer = staff(django_user_model, "viewer", "view_storedfile")
    client.force_login(viewer)
    page = client.get(CHANGELIST).content.decode()
    assert row.name in page
    assert "retry_transfers" not in page and "verify_copies" not in page
    assert "failed transfers again" not in act(client, "retry_transfers", row.pk)
    assert "copies match" not in act(client, "verify_copies", row.pk)
    after = StoredFile.objects.get(pk=row.pk)
    assert (after.status, after.version) == (Status.FAILED, row.version)

    operator = staff(
        django_user_model, "operator", "view_storedfile", "change_storedfile"
    )
    client.force_login(operator)
    assert "Queued 1 failed transfers again." in act(client, "retry_transfers", row.pk)
    after = StoredFile.objects.get(pk=row.pk)
    assert after.status == Status.PENDING and after.version != row.version


def test_admin_verify_refuses_a_selection_over_the_limit(
    client: Any, django_user_model: Any, tmp_path: Any, unique: str
) -> None:
    from queued_storage.admin import VERIFY_LIMIT

    storage = make_storage(tmp_path, unique, delayed=True)
    for i in range(VERIFY_LIMIT + 1):
        # Transferred in the ledger, missing on the remote: each would be a
        # mismatch if the action looked.
        storage.state.record(f"v{i}.txt", FileState(Status.TRANSFERRED, "v", 1))
    operator = staff(
        django_user_model, "operator", "view_storedfile", "change_storedfile"
    )
    client.force_login(operator)
    pks = list(StoredFile.objects.values_list("pk", flat=True))
    page = act(client, "verify_copies", *pks[:1], select_across="1")
    assert f"Select at most {VERIFY_LIMIT} files to verify, not {len(pks)}" in page
    assert "remote copy unreadable" not in page
    page = act(client, "verify_copies", *pks[:2])
    assert "remote copy unreadable" in page


def test_admin_rows_cannot_be_deleted_or_added(
    client: Any, django_user_model: Any, failed_row: Any
) -> None:
    storage, row = failed_row
    admin = django_user_model.objects.create_superuser("root", "r@example.com", "pw")
    client.force_login(admin)
    assert "delete_selected" not in client.get(CHANGELIST).content.decode()
    act(client, "delete_selected", row.pk, post="yes")
    assert client.get(f"{CHANGELIST}{row.pk}/delete/").status_code == 403
    assert (
        client.post(f"{CHANGELIST}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert client.get(f"{CHANGELIST}add/").status_code == 403
    assert StoredFile.objects.filter(pk=row.pk).exists()


# TransferAndDelete and a save landing before after_transfer() ----------------


class SaveAgainBeforeDelete(TransferAndDelete):
    """TransferAndDelete with a save of the same name just before the delete."""

    name = "tests.test_hardening.SaveAgainBeforeDelete"
    abstract = False
    again: Any = None

    def after_transfer(self, queued: Any, name: str) -> None:
        if self.again is not None:
            self.again(queued, name)
        super().after_transfer(queued, name)


@pytest.fixture
def overwriting(tmp_path: Any, unique: str) -> QueuedStorage:
    return make_storage(
        tmp_path, unique, local_options={"allow_overwrite": True}, delayed=True
    )


@pytest.mark.parametrize("recorded", [True, False], ids=["saved", "written"])
def test_transfer_and_delete_keeps_a_copy_saved_again_before_the_delete(
    overwriting: QueuedStorage, recorded: bool, tmp_path: Any
) -> None:
    """The new bytes stay, whether the new save has recorded its state yet
    (*saved*) or has only written the local file (*written*)."""
    storage = overwriting
    name = storage.save("photo.jpg", ContentFile(b"first"))
    version = storage.get_state(name).version

    def again(queued: Any, name: str) -> None:
        if recorded:
            queued.save(name, ContentFile(b"second!"))
        else:
            queued.local.save(name, ContentFile(b"second!"))

    task = SaveAgainBeforeDelete()
    task.again = again
    assert task.process(storage, name, version) is True
    assert storage.local.exists(name)
    # The ledger does not count the kept copy as removed.
    row = StoredFile.objects.get(storage=storage.reference, name=name)
    assert row.local_deleted is None
    with storage.local.open(name) as handle:
        assert handle.read() == b"second!"
    if recorded:
        state = storage.get_state(name)
        assert state.status == Status.PENDING and state.version != version
        with storage.open(name) as handle:
            assert handle.read() == b"second!"
        task.again = None
        assert task.process(storage, name, state.version) is True
        with storage.open(name) as handle:
            assert handle.read() == b"second!"
        assert not storage.local.exists(name)
    leftovers = [p.name for p in (tmp_path / "local").iterdir()]
    assert not [n for n in leftovers if n.startswith(".qs-deleting-")]


def test_transfer_and_delete_removes_an_unchanged_copy(
    overwriting: QueuedStorage,
) -> None:
    storage = overwriting
    name = storage.save("photo.jpg", ContentFile(b"first"))
    task = SaveAgainBeforeDelete()
    assert task.process(storage, name, storage.get_state(name).version) is True
    assert not storage.local.exists(name)
    with storage.open(name) as handle:
        assert handle.read() == b"first"


# A failed save and a concurrent upload of the same name ---------------------


class CompetingFileSystemStorage(FileSystemStorage):
    """A local storage where another upload takes a name just after this save
    chose it, as a concurrent request on another thread would."""

    armed = False

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        chosen = super().get_available_name(name, max_length)
        if type(self).armed:
            type(self).armed = False
            os.makedirs(os.path.dirname(self.path(chosen)), exist_ok=True)
            with open(self.path(chosen), "wb") as other:
                other.write(b"the other user's photo")
        return chosen


class DiskFullMidway(File):
    """Content whose second chunk fails, as a disk that fills up does."""

    def __init__(self) -> None:
        super().__init__(None, "photo.jpg")
        self.size = 2

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        yield b"half"
        raise OSError(errno.ENOSPC, "No space left on device")

    def open(self, mode: str | None = None) -> DiskFullMidway:
        return self

    def close(self) -> None:
        pass


def test_failed_save_keeps_a_concurrent_upload_of_the_requested_name(
    tmp_path: Any, unique: str
) -> None:
    storage = make_storage(
        tmp_path,
        unique,
        local="tests.test_hardening.CompetingFileSystemStorage",
        delayed=True,
    )
    CompetingFileSystemStorage.armed = True
    with pytest.raises(OSError, match="No space left"):
        storage.save("photo.jpg", DiskFullMidway())
    folder = tmp_path / "local"
    assert (folder / "photo.jpg").read_bytes() == b"the other user's photo"
    # This save's partial file, under the name the local storage chose, went.
    assert sorted(p.name for p in folder.iterdir()) == ["photo.jpg"]


# Forged messages in the logs -------------------------------------------------


def test_forged_message_with_a_huge_name_makes_a_bounded_log_record(
    celery_worker: Any, celery_app: Any, caplog: Any
) -> None:
    huge = "x" * (20 * 1024 * 1024)
    big = "y" * 500_000  # Smaller, so that the broker takes them in time.
    forged = [
        {"kwargs": {"storage": "s3", "name": huge, "version": "1", "signature": "a"}},
        {"kwargs": message.sign(TRANSFER, "s3", big, "1")},
        {"kwargs": {"storage": big, "name": "n", "version": "1", big: 1}},
        {"args": [big]},
    ]
    done, reconciled = Finished(TRANSFER), Finished(RECONCILE)
    with caplog.at_level(logging.INFO):
        try:
            for fields in forged:
                celery_app.send_task(TRANSFER, **fields)
            celery_app.send_task(RECONCILE, kwargs={"older_than": big, big: big})
            wait_for(lambda: len(done) == len(forged) and reconciled, timeout=120)
        finally:
            done.close()
            reconciled.close()
    rejected = [
        r for r in caplog.records if "Rejected a transfer message" in r.getMessage()
    ]
    assert len(rejected) == len(forged)
    ignored = [r for r in caplog.records if "reconcile task" in r.getMessage()]
    assert ignored
    longest = max(len(r.getMessage()) for r in caplog.records)
    assert longest < 10_000
    assert "20971520 characters" in rejected[0].getMessage()


def test_log_filter_bounds_any_record_of_the_package(caplog: Any) -> None:
    from queued_storage.redaction import RECORD_CHARS

    logger = logging.getLogger("queued_storage")
    with caplog.at_level(logging.INFO, logger="queued_storage"):
        logger.info("Saw %s", "y" * 1_000_000, extra={"file_name": "z" * 100_000})
    (record,) = caplog.records
    assert len(record.getMessage()) <= RECORD_CHARS + 40
    assert len(record.file_name) < 300  # type: ignore[attr-defined]
