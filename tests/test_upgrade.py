"""What 0.8's code and tests used, and what 1.0 answers for it."""

import pytest
from celery.result import AsyncResult
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.db import transaction
from django.test import TestCase, override_settings

from queued_storage.backends import QueuedStorage
from queued_storage.signals import file_queued
from queued_storage.tasks import Transfer
from tests.conftest import wait_for

FS = "django.core.files.storage.FileSystemStorage"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def sent_by_save():
    """0.8's ``result`` is the message a save sent: saves send theirs here."""
    with override_settings(QUEUED_STORAGE_OUTBOX=False):
        yield


def last_result(storage):
    with pytest.deprecated_call(match="transfer\\(name\\)"):
        return storage.result


def test_result_is_the_message_of_the_last_save_once_committed(
    fs_queued, celery_worker
):
    storage = fs_queued()
    with transaction.atomic():
        name = storage.save("r.txt", ContentFile(b"r"))
        assert last_result(storage) is None  # Not queued before the commit.
    result = last_result(storage)
    assert isinstance(result, AsyncResult) and result.id
    wait_for(lambda: storage.using_remote(name))


def test_result_is_none_when_nothing_was_queued(fs_queued):
    delayed = fs_queued(delayed=True)
    delayed.save("d.txt", ContentFile(b"d"))
    assert last_result(delayed) is None
    with override_settings(QUEUED_STORAGE_OUTBOX=True):
        outbox = fs_queued(reference="outboxed")
        outbox.save("o.txt", ContentFile(b"o"))
        assert last_result(outbox) is None


def test_result_belongs_to_its_storage(fs_queued, tmp_path):
    queued = fs_queued()
    other = QueuedStorage(
        local=FS, remote=FS, delayed=True,
        local_options={"location": str(tmp_path / "other")},
        remote_options={"location": str(tmp_path / "other-remote")},
    )  # fmt: skip
    queued.save("mine.txt", ContentFile(b"m"))
    other.save("theirs.txt", ContentFile(b"t"))
    assert last_result(queued) is not None
    assert last_result(other) is None


def test_old_time_methods_return_the_get_time_answers(fs_queued):
    storage = fs_queued(delayed=True)
    name = storage.save("t.txt", ContentFile(b"t"))
    for old in ("accessed_time", "created_time", "modified_time"):
        with pytest.deprecated_call(match=f"get_{old}"):
            found = getattr(storage, old)(name)
        assert found == getattr(storage, f"get_{old}")(name)


def test_local_path_and_remote_path_name_the_configured_backends(tmp_path):
    storage = QueuedStorage(local=FS, remote="remote_s3")
    with pytest.deprecated_call():
        assert storage.local_path == FS
    with pytest.deprecated_call():
        assert storage.remote_path == "remote_s3"


def test_import_attribute_still_imports_and_says_what_replaces_it():
    from queued_storage.utils import import_attribute

    with pytest.deprecated_call(match="import_string"):
        assert import_attribute(FS) is FileSystemStorage
    with pytest.deprecated_call(), pytest.raises(ImproperlyConfigured):
        import_attribute("no.such.Storage")
    with pytest.deprecated_call(), pytest.raises(ImproperlyConfigured):
        import_attribute(None)


def test_a_plain_function_with_delay_is_refused_by_name(fs_queued):
    from queued_storage.checks import check_storages

    def old_style(*args):
        return True

    old_style.delay = old_style
    storage = fs_queued(task="tests.test_upgrade.plain_task", reference="plain-task")
    from django.core.files.storage import storages

    with override_settings(
        STORAGES={
            **storages.backends,
            "plain": {
                "BACKEND": "queued_storage.backends.QueuedStorage",
                "OPTIONS": {
                    "local": FS, "remote": FS, "task": "tests.test_upgrade.plain_task"
                },
            },
        }
    ):  # fmt: skip
        messages = [m for m in check_storages() if m.id == "queued_storage.E003"]
    assert messages and "subclass of queued_storage.tasks.Transfer" in messages[0].msg
    with pytest.raises(ImproperlyConfigured, match="Transfer"):
        storage.save("p.txt", ContentFile(b"p"))


def plain_task(*args, **kwargs):
    """A 0.8-style task: a plain function with a ``delay`` attribute."""
    return True


plain_task.delay = plain_task


class NoneReturning(Transfer):
    """A 0.8-style task whose ``transfer()`` returns ``None``."""

    def transfer(self, name, local, remote, **kwargs):
        return None


def test_a_transfer_returning_none_is_retried_then_failed(fs_queued):
    storage = fs_queued(delayed=True, task="tests.test_upgrade.NoneReturning")
    name = storage.save("none.txt", ContentFile(b"n"))
    task = NoneReturning()
    with override_settings(QUEUED_STORAGE_RETRIES=0):
        assert task.process(storage, name, storage.get_state(name).version) is False
    state = storage.get_state(name)
    assert state.status == "failed"
    assert "returned False" in state.error
    with storage.open(name) as handle:  # Still served from the local copy.
        assert handle.read() == b"n"


class SavesInATestCase(TestCase):
    """How a ``TestCase`` sees the transfer message that a save queues."""

    databases = {"default"}

    @override_settings(QUEUED_STORAGE_OUTBOX=False)
    def test_message_is_sent_by_the_on_commit_callbacks(self):
        import tempfile

        folder = tempfile.mkdtemp()
        storage = QueuedStorage(
            local=FS, remote=FS,
            local_options={"location": f"{folder}/local"},
            remote_options={"location": f"{folder}/remote"},
        )  # fmt: skip
        queued = []

        def receiver(sender, name, **kwargs):
            queued.append(name)

        file_queued.connect(receiver)
        try:
            with self.captureOnCommitCallbacks(execute=False) as callbacks:
                storage.save("in-test.txt", ContentFile(b"x"))
            self.assertEqual(len(callbacks), 1)
            self.assertEqual(queued, [])  # A TestCase never commits.
            with self.captureOnCommitCallbacks(execute=True):
                name = storage.save("sent.txt", ContentFile(b"y"))
            self.assertEqual(queued, [name])
        finally:
            file_queued.disconnect(receiver)

    def test_transfer_run_in_the_test_process_moves_the_file(self):
        import tempfile

        folder = tempfile.mkdtemp()
        storage = QueuedStorage(
            local=FS, remote=FS, delayed=True,
            local_options={"location": f"{folder}/local"},
            remote_options={"location": f"{folder}/remote"},
        )  # fmt: skip
        with self.captureOnCommitCallbacks(execute=True):
            name = storage.save("moved.txt", ContentFile(b"z"))
        state = storage.get_state(name)
        self.assertTrue(Transfer().process(storage, name, state.version))
        self.assertTrue(storage.using_remote(name))
        self.assertTrue(storage.remote.exists(name))


def test_result_is_kept_per_thread(fs_queued):
    import threading

    storage = fs_queued()
    seen = {}

    def save_in_a_thread():
        from django.db import connections

        try:
            storage.save("thread.txt", ContentFile(b"t"))
            with pytest.deprecated_call():
                seen["thread"] = storage.result
        finally:
            connections.close_all()  # This thread's own connection.

    worker = threading.Thread(target=save_in_a_thread)
    worker.start()
    worker.join(timeout=30)
    assert isinstance(seen["thread"], AsyncResult)
    assert last_result(storage) is None
