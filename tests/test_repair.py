"""Verifying, purging and importing: each mismatch and each refusal is reported."""

import io
import json
import os
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from queued_storage import operations
from queued_storage.models import StoredFile
from queued_storage.state import Status
from queued_storage.tasks import Transfer

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args):
    out = io.StringIO()
    call_command("queued_storage", *args, stdout=out)
    return out.getvalue()


def move(storage, name):
    assert Transfer().process(storage, name, storage.get_state(name).version)


def overwrite(path, data):
    with open(path, "wb") as handle:
        handle.write(data)


@pytest.fixture
def moved(fs_queued):
    """A delayed pair with four transferred files of five bytes."""
    storage = fs_queued(delayed=True)
    for key in ("same", "short", "gone", "differs"):
        name = storage.save(f"{key}.txt", ContentFile(b"12345"))
        move(storage, name)
    return storage


def test_verify_names_each_kind_of_mismatch(moved):
    overwrite(moved.remote.path("short.txt"), b"12")
    os.remove(moved.remote.path("gone.txt"))
    overwrite(moved.local.path("differs.txt"), b"1234567")
    problems = {p.name: p.problem for p in operations.verify(moved)}
    assert set(problems) == {"short.txt", "gone.txt", "differs.txt"}
    assert problems["short.txt"] == "remote has 2 bytes, the ledger 5"
    assert problems["gone.txt"].startswith("remote copy unreadable: ")
    assert problems["differs.txt"] == "remote has 5 bytes, local 7"
    assert operations.verify(moved, ["same.txt"]) == []


def test_verify_command_fails_on_mismatches_and_reports_them_as_json(moved):
    overwrite(moved.remote.path("short.txt"), b"12")
    with pytest.raises(CommandError, match="1 transferred files do not match"):
        run("verify", "--storage", moved.reference)
    found = json.loads(run("verify", "--storage", moved.reference, "--json"))
    assert found == {
        "mismatches": {
            moved.reference: {"short.txt": "remote has 2 bytes, the ledger 5"}
        }
    }
    text = run("verify", "--storage", moved.reference, "same.txt")
    assert text.strip().endswith("0 mismatches.")


def test_purge_removes_only_rows_deleted_long_ago(fs_queued):
    storage = fs_queued(delayed=True)
    for name in ("old.txt", "recent.txt", "kept.txt"):
        storage.save(name, ContentFile(b"x"))
    storage.delete("old.txt")
    storage.delete("recent.txt")
    rows = StoredFile.objects.filter(storage=storage.reference)
    rows.filter(name="old.txt").update(updated=timezone.now() - timedelta(days=31))
    assert "Removed 1 rows" in run("purge", "--storage", storage.reference)
    assert set(rows.values_list("name", flat=True)) == {"recent.txt", "kept.txt"}
    assert rows.get(name="recent.txt").status == Status.DELETED
    assert json.loads(
        run("purge", "--storage", storage.reference, "--older-than", "0", "--json")
    ) == {"removed": 1}
    assert set(rows.values_list("name", flat=True)) == {"kept.txt"}


def test_import_reports_a_file_the_remote_refuses(fs_queued):
    storage = fs_queued(delayed=True)
    storage.local.save("clash.txt", ContentFile(b"local bytes"))
    storage.local.save("fine.txt", ContentFile(b"fine"))
    storage.remote.save("clash.txt", ContentFile(b"another object"))
    report = operations.bulk_import(storage)
    assert report.done == 1
    assert list(report.failed) == ["clash.txt"]
    assert report.failed["clash.txt"].startswith("RemoteConflict: ")
    assert storage.get_state("fine.txt").status == Status.TRANSFERRED
    text = run("import", "--storage", storage.reference, "--no-progress")
    assert "Moved 0 files; 1 already remote; 1 failed; 0 left out." in text
    assert "failed: clash.txt: RemoteConflict" in text


def test_import_limit_takes_the_first_files_only(fs_queued):
    storage = fs_queued(delayed=True)
    for index in range(3):
        storage.local.save(f"n{index}.txt", ContentFile(b"x"))
    seen = []
    report = operations.bulk_import(
        storage, limit=2, progress=lambda i, total, name: seen.append((i, total))
    )
    assert report.done == 2
    moved = [f"n{index}.txt" for index in range(3)]
    assert sum(storage.remote.exists(name) for name in moved) == 2
    assert seen == [(1, 2), (2, 2)]


def test_import_needs_one_storage(fs_queued):
    fs_queued(delayed=True, reference="one-of-many")
    with pytest.raises(CommandError, match="Name the storage to import with --storage"):
        run("import")


@pytest.mark.parametrize(
    "options", [["--batch", "0"], ["--interval", "0"], ["--batch", "-3"]]
)
def test_dispatch_refuses_a_batch_or_interval_below_one(options):
    with pytest.raises(CommandError, match="must be positive"):
        run("dispatch", "--once", *options)


def test_status_as_json_counts_each_state(fs_queued):
    storage = fs_queued(delayed=True)
    storage.save("a.txt", ContentFile(b"a"))
    name = storage.save("b.txt", ContentFile(b"b"))
    move(storage, name)
    storage.save("c.txt", ContentFile(b"c"))
    storage.delete("c.txt")
    result = json.loads(run("status", "--storage", storage.reference, "--json"))
    assert result["counts"] == {
        "pending": 1, "transferring": 0, "transferred": 1, "failed": 0,
        "deleted": 1,
    }  # fmt: skip
    assert result["oldest_pending_seconds"] >= 0
    assert result["outbox"] == 0
    text = run("status", "--storage", storage.reference)
    assert "pending: 1" in text and "in the outbox: 0" in text


def test_retry_and_reconcile_skip_rows_of_storages_no_longer_configured(caplog):
    for status in (Status.FAILED, Status.PENDING):
        StoredFile.objects.create(
            storage="forgotten", name=f"{status}.txt", name_hash=f"{status:0<64}",
            status=status, version="v",
        )  # fmt: skip
    StoredFile.objects.filter(storage="forgotten").update(
        updated=timezone.now() - timedelta(days=2)
    )
    assert operations.retry_failed() == []
    assert operations.reconcile(timedelta(seconds=1)) == []
    skipped = [r.getMessage() for r in caplog.records if "no longer" in r.getMessage()]
    assert len(skipped) == 2
    assert all("'forgotten'" in message for message in skipped)


def test_admin_verify_reports_mismatches_and_forgotten_storages(
    client, django_user_model, moved
):
    staff = django_user_model.objects.create_superuser("v", "v@example.com", "pw")
    client.force_login(staff)
    overwrite(moved.remote.path("short.txt"), b"12")
    StoredFile.objects.create(
        storage="forgotten", name="lost.txt", name_hash="f" * 64,
        status=Status.TRANSFERRED, version="v",
    )  # fmt: skip
    rows = StoredFile.objects.filter(name__in=["short.txt", "same.txt", "lost.txt"])
    response = client.post(
        "/admin/queued_storage/storedfile/",
        {"action": "verify_copies", "_selected_action": [r.pk for r in rows]},
        follow=True,
    )
    page = response.content.decode()
    # Each storage is verified once, however the admin orders the rows.
    assert page.count("Short.txt: remote has 2 bytes, the ledger 5") == 1
    assert "known as &#x27;forgotten&#x27;" in page
    assert "All transferred copies match." not in page
    listing = client.get("/admin/queued_storage/storedfile/?q=short")
    assert "short.txt" in listing.content.decode()


@pytest.fixture
def outboxed(fs_queued, unique):
    """A storage whose saves wait in the outbox, for a queue nobody reads."""
    with override_settings(
        QUEUED_STORAGE_OUTBOX=True,
        QUEUED_STORAGE_QUEUE=f"unread-{unique}",
        QUEUED_STORAGE_WORKER_DISPATCH=False,
    ):
        yield fs_queued()


def test_the_dispatch_loop_sends_every_waiting_message(outboxed):
    from queued_storage import dispatch

    for index in range(3):
        outboxed.save(f"o{index}.txt", ContentFile(b"o"))
    waiting = StoredFile.objects.filter(storage=outboxed.reference, outbox=True)
    assert waiting.count() == 3
    passes = []

    def stop():
        passes.append(1)
        return not waiting.exists() or len(passes) > 500

    total = dispatch.run(interval=0.01, batch=2, storage=outboxed.reference, stop=stop)
    assert total == 3
    assert not waiting.exists()


def test_the_dispatch_command_runs_until_sigterm(outboxed):
    import signal
    import threading
    import time

    outboxed.save("waiting.txt", ContentFile(b"w"))
    saved = {number: signal.getsignal(number) for number in (2, 15)}

    def placeholder(signum, frame):
        pass  # A SIGTERM before the command listens must not end the tests.

    signal.signal(signal.SIGTERM, placeholder)

    def stop_when_listening():
        deadline = time.monotonic() + 30
        while signal.getsignal(signal.SIGTERM) is placeholder:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_when_listening)
    stopper.start()
    try:
        text = run("dispatch", "--interval", "0.05", "--storage", outboxed.reference)
    finally:
        stopper.join(timeout=40)
        for number, handler in saved.items():
            signal.signal(number, handler)
    assert "Dispatching the outbox; stop with Ctrl-C or SIGTERM." in text
    assert "Queued 1 transfers from the outbox." in text
    assert not StoredFile.objects.filter(storage=outboxed.reference, outbox=True)


def test_import_of_an_empty_local_storage_moves_nothing(fs_queued):
    storage = fs_queued(delayed=True)
    assert not os.path.exists(storage.local.location)
    report = operations.bulk_import(storage)
    assert (report.done, report.skipped, report.failed) == (0, 0, {})


def test_progress_bar_shows_the_share_done_and_the_name(capsys):
    from queued_storage.management.commands.queued_storage import Command

    Command.progress_bar(3, 4, "reports/2024/summary.pdf")
    shown = capsys.readouterr().err
    assert shown.startswith(
        "\r[" + "#" * 22 + "-" * 8 + "] 3/4 reports/2024/summary.pdf"
    )
    Command.progress_bar(0, 0, "x" * 60)
    shown = capsys.readouterr().err
    assert "[" + "-" * 30 + "] 0/0 " + "x" * 40 in shown
