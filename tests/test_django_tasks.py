"""The django_tasks runner with the framework's in-process backends.

``ImmediateBackend`` runs a task as it is enqueued; ``DummyBackend`` keeps
it, so that a test can look at the message and run it by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from queued_storage import dispatch, operations, retention
from queued_storage.enqueue import this_host
from queued_storage.exceptions import InvalidMessage
from queued_storage.models import StoredFile
from queued_storage.runner_checks import check_runners
from queued_storage.runners import get_runner
from queued_storage.runners.django_tasks import (
    TaskTransfer,
    task_backends,
    transfer,
    transfer_and_delete,
)
from queued_storage.signals import file_transferred, transfer_failed
from queued_storage.state import Status
from tests.tasks_app import ROOT as TASKS_ROOT

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)


class Refusing:
    """A transfer that fails, as a remote that is down."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        raise OSError("the remote is down")


def row(storage, name):
    return StoredFile.objects.get(storage=storage.reference, name=name)


@pytest.fixture
def dummy():
    with override_settings(QUEUED_STORAGE_TASKS_BACKEND="dummy"):
        backend = task_backends["dummy"]
        backend.clear()
        yield backend
        backend.clear()


def test_the_immediate_backend_transfers_when_the_transaction_commits(fs_queued):
    storage = fs_queued(runner="django_tasks")
    with transaction.atomic():
        name = storage.save("now.txt", ContentFile(b"moved"))
        assert row(storage, name).status == Status.PENDING
    assert row(storage, name).status == Status.TRANSFERRED
    assert storage.using_remote(name)
    with storage.open(name) as handle:
        assert handle.read() == b"moved"


def test_the_setting_chooses_the_runner_at_each_send(fs_queued, dummy):
    storage = fs_queued()
    with override_settings(QUEUED_STORAGE_RUNNER="django_tasks"):
        name = storage.save("by-setting.txt", ContentFile(b"x"))
    assert len(dummy.results) == 1
    assert dummy.results[0].kwargs["name"] == name


def test_the_message_is_signed_path_free_and_goes_to_the_host_queue(fs_queued, dummy):
    storage = fs_queued(runner="django_tasks", task="queued_storage.tasks.Transfer")
    with override_settings(QUEUED_STORAGE_PER_HOST_QUEUE=True):
        name = storage.save("queued.txt", ContentFile(b"x"))
    [result] = dummy.results
    assert result.task.queue_name == f"queued_storage.{this_host()}"
    assert result.task.module_path == "queued_storage.runners.django_tasks.transfer"
    assert set(result.kwargs) == {"storage", "name", "version", "signature"}
    assert result.kwargs["storage"] == storage.reference
    assert row(storage, name).status == Status.PENDING
    assert result.task.call(**result.kwargs) is True
    assert row(storage, name).status == Status.TRANSFERRED


def test_transfer_and_delete_removes_the_local_copy(fs_queued, dummy):
    storage = fs_queued(
        runner="django_tasks", task="queued_storage.tasks.TransferAndDelete"
    )
    name = storage.save("gone.txt", ContentFile(b"x"))
    [result] = dummy.results
    assert result.task.func is transfer_and_delete.func
    result.task.call(**result.kwargs)
    assert not storage.local.exists(name)
    assert storage.remote.exists(name)


def test_transfer_and_delete_keeps_a_copy_written_again_after_its_upload(
    fs_queued, dummy
):
    from queued_storage.runners.django_tasks import TaskTransferAndDelete

    storage = fs_queued(
        runner="django_tasks", task="queued_storage.tasks.TransferAndDelete"
    )
    name = storage.save("photo.txt", ContentFile(b"first"))
    [result] = dummy.results

    class WrittenAgain(TaskTransferAndDelete):
        def after_transfer(self, queued, name):
            # New bytes land in the local copy before it is deleted.
            with open(queued.local.path(name), "wb") as handle:
                handle.write(b"second!")
            super().after_transfer(queued, name)

    task_path = transfer_and_delete.module_path
    assert WrittenAgain().receive(task_path, **result.kwargs) is True
    assert storage.remote.exists(name)
    with storage.local.open(name) as handle:
        assert handle.read() == b"second!"
    # The copy kept still counts as held locally.
    assert row(storage, name).local_deleted is None
    assert retention.local_bytes(storage) > 0


def test_a_forged_or_replayed_message_is_refused_and_changes_nothing(fs_queued, dummy):
    storage = fs_queued(runner="django_tasks")
    name = storage.save("forged.txt", ContentFile(b"x"))
    [result] = dummy.results
    forged = {**result.kwargs, "signature": result.kwargs["signature"][:-2] + "xx"}
    with pytest.raises(InvalidMessage):
        transfer.call(**forged)
    # Signed for another task: a transfer message replayed to delete the copy.
    with pytest.raises(InvalidMessage, match="differ"):
        transfer_and_delete.call(**result.kwargs)
    other = {**result.kwargs, "name": "other.txt"}
    with pytest.raises(InvalidMessage):
        transfer.call(**other)
    assert row(storage, name).status == Status.PENDING
    assert row(storage, name).attempts == 0
    assert storage.local.exists(name) and not storage.remote.exists(name)


def test_a_failed_transfer_is_enqueued_again_for_later_where_deferral_works(
    fs_queued, dummy, monkeypatch
):
    storage = fs_queued(runner="django_tasks")
    name = storage.save("retry.txt", ContentFile(b"x"))
    [first] = dummy.results
    refusing = Refusing()
    monkeypatch.setattr(
        "queued_storage.runners.django_tasks.TaskTransfer.transfer",
        lambda self, *a, **k: refusing(*a, **k),
    )
    assert first.task.call(**first.kwargs) is False
    found = row(storage, name)
    assert (found.status, found.attempts) == (Status.PENDING, 1)
    assert found.next_attempt is not None and "OSError" in found.last_error
    [_, again] = dummy.results
    assert again.task.run_after is not None
    # The same file; the signature, timestamped, is the retry's own (the
    # call below checks it).
    assert {**again.kwargs, "signature": ""} == {**first.kwargs, "signature": ""}
    assert again.kwargs["signature"]
    # Replayed early, the retry steps aside without counting an attempt.
    assert again.task.call(**again.kwargs) is False
    assert row(storage, name).attempts == 1
    assert refusing.calls == 1


def test_without_deferral_a_retry_waits_in_the_ledger_for_reconcile(
    fs_queued, monkeypatch
):
    storage = fs_queued(runner="django_tasks")
    refusing = Refusing()
    monkeypatch.setattr(
        "queued_storage.runners.django_tasks.TaskTransfer.transfer",
        lambda self, *a, **k: refusing(*a, **k),
    )
    name = storage.save("later.txt", ContentFile(b"x"))
    found = row(storage, name)
    # The ImmediateBackend cannot defer: nothing is run again at once.
    assert (found.status, found.attempts, found.outbox) == (Status.PENDING, 1, True)
    assert refusing.calls == 1
    monkeypatch.undo()
    # The retry falls due (RETRY_DELAY is 1 s in the tests' settings).
    past = timezone.now() - timedelta(seconds=1)
    StoredFile.objects.filter(pk=found.pk).update(next_attempt=past)
    assert operations.reconcile(storage=storage.reference) == [name]
    assert row(storage, name).status == Status.TRANSFERRED


def test_an_unreachable_backend_leaves_the_file_pending(fs_queued):
    storage = fs_queued(runner="django_tasks")
    with override_settings(QUEUED_STORAGE_TASKS_BACKEND="missing"):
        name = storage.save("stuck.txt", ContentFile(b"x"))
    assert row(storage, name).status == Status.PENDING
    assert storage.local.exists(name)


def test_a_task_option_that_is_no_task_raises(fs_queued):
    storage = fs_queued(runner="django_tasks", task="queued_storage.tasks.reconcile")
    with pytest.raises(ImproperlyConfigured, match="not a task of Django"):
        storage.enqueue("x.txt", "v")


def test_an_unknown_runner_raises_before_anything_is_saved(fs_queued):
    with pytest.raises(ImproperlyConfigured, match="'celery', 'django_tasks'"):
        fs_queued(runner="rq")
    storage = fs_queued()
    with override_settings(QUEUED_STORAGE_RUNNER="rq"):
        with pytest.raises(ImproperlyConfigured, match="'celery', 'django_tasks'"):
            storage.get_runner()
    with pytest.raises(ImproperlyConfigured, match="cannot be imported"):
        get_runner("nowhere.Runner")


def test_the_runner_option_must_be_a_string(fs_queued):
    with pytest.raises(ImproperlyConfigured, match="runner must be a str"):
        fs_queued(runner=1)


def test_the_runner_option_keeps_the_reference(fs_queued):
    assert fs_queued(runner="django_tasks").reference == fs_queued().reference


def check_ids():
    return sorted(message.id for message in check_runners())


@override_settings(QUEUED_STORAGE_RUNNER="django_tasks")
def test_checks_warn_of_the_immediate_backend_without_deferral():
    assert check_ids() == ["queued_storage.W050", "queued_storage.W052"]


@override_settings(QUEUED_STORAGE_RUNNER="django_tasks")
def test_checks_accept_the_database_backend_and_a_dummy_one_in_tests(monkeypatch):
    with override_settings(QUEUED_STORAGE_TASKS_BACKEND="database"):
        assert check_ids() == []
    with override_settings(QUEUED_STORAGE_TASKS_BACKEND="dummy"):
        assert check_ids() == []
        from django.core import mail

        monkeypatch.delattr(mail, "outbox")
        assert check_ids() == ["queued_storage.W051"]


@override_settings(
    QUEUED_STORAGE_RUNNER="django_tasks",
    QUEUED_STORAGE_TASKS_BACKEND="database",
    QUEUED_STORAGE_QUEUE="uploads",
)
def test_checks_require_the_backend_to_admit_the_transfer_queue():
    database = {"BACKEND": "django_tasks_db.DatabaseBackend"}
    with override_settings(TASKS={"default": database, "database": database}):
        assert check_ids() == ["queued_storage.E052"]
    admitting = {**database, "QUEUES": ["uploads"]}
    with override_settings(TASKS={"default": database, "database": admitting}):
        assert check_ids() == []
    with override_settings(QUEUED_STORAGE_TASKS_BACKEND="nowhere"):
        assert check_ids() == ["queued_storage.E051"]
    with override_settings(QUEUED_STORAGE_RUNNER="rq"):
        assert check_ids() == ["queued_storage.E050"]


def test_the_django_tasks_runner_moves_files_without_celery(tmp_path):
    code = (
        "import sys; sys.modules['celery'] = None; sys.modules['kombu'] = None\n"
        "from django.conf import settings\n"
        "settings.configure(\n"
        "    INSTALLED_APPS=['queued_storage'], SECRET_KEY='x' * 50,\n"
        "    DATABASES={'default': {'ENGINE': 'django.db.backends.sqlite3',\n"
        "                           'NAME': ':memory:'}},\n"
        "    QUEUED_STORAGE_RUNNER='django_tasks')\n"
        "import django; django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "call_command('check')\n"
        "from django.core.files.base import ContentFile\n"
        "from queued_storage.backends import QueuedStorage\n"
        "fs = 'django.core.files.storage.FileSystemStorage'\n"
        "storage = QueuedStorage(local=fs, remote=fs,\n"
        f"    local_options={{'location': {str(tmp_path / 'l')!r}}},\n"
        f"    remote_options={{'location': {str(tmp_path / 'r')!r}}})\n"
        "name = storage.save('a.txt', ContentFile(b'x'))\n"
        "print(storage.using_remote(name), 'celery' in sys.modules and\n"
        "      sys.modules['celery'] is not None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
        env=env, timeout=60,
    )  # fmt: skip
    assert done.stdout.split() == ["True", "False"], done.stderr


def test_in_outbox_mode_the_dispatcher_enqueues_the_tasks(fs_queued, dummy):
    storage = fs_queued(runner="django_tasks")
    with override_settings(
        QUEUED_STORAGE_OUTBOX=True, QUEUED_STORAGE_WORKER_DISPATCH=False
    ):
        name = storage.save("outbox.txt", ContentFile(b"x"))
        assert dummy.results == []
        assert row(storage, name).outbox
        assert dispatch.dispatch(storage=storage.reference) == [name]
    [result] = dummy.results
    assert result.kwargs["name"] == name
    assert not row(storage, name).outbox
    assert result.task.call(**result.kwargs) is True


def test_a_message_delivered_twice_transfers_once(fs_queued, dummy):
    storage = fs_queued(runner="django_tasks")
    name = storage.save("twice.txt", ContentFile(b"x"))
    [result] = dummy.results
    assert result.task.call(**result.kwargs) is True
    assert result.task.call(**result.kwargs) is True
    found = row(storage, name)
    assert (found.status, found.attempts) == (Status.TRANSFERRED, 1)


def test_a_message_of_a_file_saved_again_is_discarded(fs_queued, dummy):
    storage = fs_queued(runner="django_tasks")
    name = storage.save("again.txt", ContentFile(b"x"))
    [old] = dummy.results
    storage.delete(name)
    assert old.task.call(**old.kwargs) is False
    assert not storage.remote.exists(name)
    assert row(storage, name).status == Status.DELETED


def test_a_default_backend_that_refuses_the_tasks_is_reported_not_raised():
    code = (
        "from django.conf import settings\n"
        "settings.configure(\n"
        "    INSTALLED_APPS=['queued_storage'], SECRET_KEY='x' * 50,\n"
        "    DATABASES={'default': {'ENGINE': 'django.db.backends.sqlite3',\n"
        "                           'NAME': ':memory:'}},\n"
        "    TASKS={'default': {\n"
        "        'BACKEND': 'django.tasks.backends.dummy.DummyBackend',\n"
        "        'QUEUES': ['uploads']}},\n"
        "    QUEUED_STORAGE_RUNNER='django_tasks')\n"
        "import django; django.setup()\n"
        "from queued_storage.runner_checks import check_runners\n"
        "print(*[m.id for m in check_runners()])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
        env=env, timeout=60,
    )  # fmt: skip
    assert done.stdout.split() == ["queued_storage.E050"], done.stderr


def test_a_retry_past_the_countdown_limit_waits_in_the_ledger_not_the_backend(
    fs_queued, dummy, monkeypatch
):
    storage = fs_queued(runner="django_tasks")
    name = storage.save("far-retry.txt", ContentFile(b"x"))
    [first] = dummy.results
    monkeypatch.setattr(
        "queued_storage.runners.django_tasks.TaskTransfer.transfer",
        lambda self, *a, **k: Refusing()(*a, **k),
    )
    with override_settings(QUEUED_STORAGE_RETRY_COUNTDOWN_MAX=0):
        assert first.task.call(**first.kwargs) is False
    found = row(storage, name)
    assert (found.status, found.attempts, found.outbox) == (Status.PENDING, 1, True)
    assert found.next_attempt is not None
    assert len(dummy.results) == 1


def test_a_pending_file_is_sent_through_the_runner_of_now_when_sent_again(
    fs_queued, dummy
):
    storage = fs_queued()
    with override_settings(QUEUED_STORAGE_OUTBOX=True):
        # Saved while Celery was the runner: its message waits in the outbox.
        name = storage.save("moved-runner.txt", ContentFile(b"x"))
    assert row(storage, name).outbox
    with override_settings(QUEUED_STORAGE_RUNNER="django_tasks"):
        storage.transfer(name)
    [result] = dummy.results
    assert result.task.module_path == "queued_storage.runners.django_tasks.transfer"
    assert result.kwargs["name"] == name
    assert result.kwargs["version"] == row(storage, name).version


def test_an_inline_transfer_runs_the_framework_task_of_the_storage(fs_queued, dummy):
    storage = fs_queued(runner="django_tasks", task="tests.tasks_app.transfer")
    name = storage.save("inline.txt", ContentFile(b"x"))
    outcome = storage.transfer(name, now=True)
    assert outcome.status == Status.TRANSFERRED
    assert storage.remote.exists(name)
    # The custom task ran (MarkingTransfer leaves its mark), not a Celery one.
    assert (TASKS_ROOT / "marks" / name.replace("/", "_")).exists()
    assert len(dummy.results) == 1  # The save's message; nothing more queued.


def test_an_inline_transfer_on_the_framework_makes_one_attempt(
    fs_queued, dummy, monkeypatch
):
    storage = fs_queued(runner="django_tasks")
    name = storage.save("inline-fails.txt", ContentFile(b"x"))
    refusing = Refusing()
    monkeypatch.setattr(
        "queued_storage.runners.django_tasks.TaskTransfer.transfer",
        lambda self, *a, **k: refusing(*a, **k),
    )
    outcome = storage.transfer(name, now=True)
    assert (outcome.status, outcome.attempts) == (Status.FAILED, 1)
    assert "OSError" in outcome.error
    assert refusing.calls == 1
    assert len(dummy.results) == 1  # No retry was queued.


def test_the_queue_is_the_transfer_queue_else_the_framework_default(fs_queued, dummy):
    storage = fs_queued(runner="django_tasks")
    storage.save("default-queue.txt", ContentFile(b"x"))
    with override_settings(QUEUED_STORAGE_QUEUE="uploads"):
        storage.save("uploads-queue.txt", ContentFile(b"x"))
    assert [result.task.queue_name for result in dummy.results] == [
        "default", "uploads",
    ]  # fmt: skip


def test_the_tasks_send_the_same_signals_as_the_celery_ones(
    fs_queued, dummy, monkeypatch
):
    received = []

    def receiver(signal, sender, **kwargs):
        received.append((signal, sender, kwargs["name"]))

    file_transferred.connect(receiver)
    transfer_failed.connect(receiver)
    try:
        storage = fs_queued(runner="django_tasks")
        moved = storage.save("signalled.txt", ContentFile(b"x"))
        failing = storage.save("signalled-failure.txt", ContentFile(b"x"))
        done, refused = dummy.results
        assert done.task.call(**done.kwargs) is True
        monkeypatch.setattr(
            "queued_storage.runners.django_tasks.TaskTransfer.transfer",
            lambda self, *a, **k: Refusing()(*a, **k),
        )
        with override_settings(QUEUED_STORAGE_RETRIES=0):
            assert refused.task.call(**refused.kwargs) is False
    finally:
        file_transferred.disconnect(receiver)
        transfer_failed.disconnect(receiver)
    assert received == [
        (file_transferred, TaskTransfer, moved),
        (transfer_failed, TaskTransfer, failing),
    ]


def test_a_task_the_backend_could_not_take_is_sent_again_by_reconcile(fs_queued, dummy):
    storage = fs_queued(runner="django_tasks")
    with override_settings(QUEUED_STORAGE_TASKS_BACKEND="missing"):
        name = storage.save("sent-later.txt", ContentFile(b"x"))
    assert dummy.results == []
    StoredFile.objects.filter(storage=storage.reference, name=name).update(
        updated=timezone.now() - timedelta(hours=1)
    )
    assert operations.reconcile(storage=storage.reference) == [name]
    [result] = dummy.results
    assert result.kwargs["name"] == name
    assert result.task.call(**result.kwargs) is True
    assert storage.using_remote(name)


def test_in_outbox_mode_small_files_still_get_a_task_each(fs_queued, dummy):
    # Only the Celery runner sends several files in one message.
    storage = fs_queued(runner="django_tasks")
    with override_settings(
        QUEUED_STORAGE_OUTBOX=True, QUEUED_STORAGE_WORKER_DISPATCH=False
    ):
        names = [storage.save(f"many/{i}.txt", ContentFile(b"x")) for i in range(12)]
        sent = dispatch.dispatch(storage=storage.reference, spread=1)
    assert sorted(sent) == sorted(names)
    assert sorted(result.kwargs["name"] for result in dummy.results) == sorted(names)
    for result in dummy.results:
        assert result.task.call(**result.kwargs) is True
    assert {row(storage, name).status for name in names} == {Status.TRANSFERRED}
