"""Files that no model row references: found, listed, deleted with care."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import call_command
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from queued_storage import orphans, tasks
from queued_storage.models import StoredFile
from queued_storage.state import Status
from tests.testapp.models import Album, Archive, Plain, fs_storage

# testapp.Archive, on the file-system pair too, lives in the database "other".
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


@pytest.fixture(autouse=True)
def no_broker() -> Any:
    with override_settings(
        QUEUED_STORAGE_OUTBOX=True, QUEUED_STORAGE_WORKER_DISPATCH=False
    ):
        yield


def saved(name: str) -> str:
    """Save a file in the file-system pair and return its name."""
    return fs_storage.save(name, ContentFile(name.encode()))


def age(*names: str, hours: float = 25) -> None:
    StoredFile.objects.filter(storage="fs", name__in=names).update(
        updated=timezone.now() - timedelta(hours=hours)
    )


def run_command(*args: str) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "queued_storage", "orphans", "--storage", "fs", "--json", *args,
        stdout=out, stderr=err,
    )  # fmt: skip
    assert "[#" not in err.getvalue()  # No progress bar off a terminal.
    return json.loads(out.getvalue())["fs"]


@pytest.fixture
def files(unique: str) -> dict[str, str]:
    """Files referenced in every way the file-system pair is, and orphans."""
    names = {
        key: saved(f"orphans/{unique}-{key}.txt")
        for key in ("plain", "cover", "back", "twice", "orphan", "young")
    }
    Plain.objects.create(file=names["plain"])
    Plain.objects.create(file=names["twice"])
    Album.objects.create(cover=names["cover"], back=names["back"])
    Album.objects.create(cover=names["twice"])
    fs_storage.transfer(names["orphan"], now=True)
    age(*(name for key, name in names.items() if key != "young"))
    return names


def test_references_cover_subclassed_callable_and_alias_fields():
    found = {str(ref) for ref in orphans.references(fs_storage)}
    assert found == {
        "testapp.Plain.file", "testapp.Album.cover", "testapp.Album.back",
        "testapp.Archive.file",
    }  # fmt: skip
    aliased = {str(ref) for ref in orphans.references(storages["queued"])}
    assert aliased == {"testapp.Album.sleeve"}


def test_dry_run_lists_only_old_unreferenced_files_and_deletes_nothing(files):
    result = run_command("--batch", "2")
    assert result["orphans"] == [files["orphan"]]
    assert result["bytes"] == len(files["orphan"])
    assert result["deleted"] == 0
    assert fs_storage.local.exists(files["orphan"])
    assert fs_storage.remote.exists(files["orphan"])
    assert fs_storage.get_state(files["orphan"]).status == Status.TRANSFERRED


def test_delete_removes_both_copies_and_the_row_and_keeps_every_referenced_file(
    files,
):
    result = run_command("--delete", "--batch", "2")
    assert (result["orphans"], result["deleted"]) == ([files["orphan"]], 1)
    assert not fs_storage.local.exists(files["orphan"])
    assert not fs_storage.remote.exists(files["orphan"])
    assert not StoredFile.objects.filter(name=files["orphan"]).exists()
    assert not fs_storage.exists(files["orphan"])
    for key in ("plain", "cover", "back", "twice", "young"):
        assert fs_storage.local.exists(files[key]), key
        assert StoredFile.objects.filter(name=files[key]).exists(), key


def test_a_file_referenced_only_by_a_row_of_another_database_is_kept(files, unique):
    archived = saved(f"orphans/{unique}-archived.txt")
    Archive.objects.create(file=archived)
    assert Archive.objects.db_manager("other").filter(file=archived).exists()
    assert not Plain.objects.filter(file=archived).exists()
    [ref] = [ref for ref in orphans.references(fs_storage) if ref.model is Archive]
    assert ref.databases == ("other",)
    age(archived)
    result = run_command("--delete")
    assert (result["orphans"], result["deleted"]) == ([files["orphan"]], 1)
    assert fs_storage.local.exists(archived)
    assert fs_storage.get_state(archived).status != Status.DELETED
    Archive.objects.all().delete()
    result = run_command("--delete")
    assert (result["orphans"], result["deleted"]) == ([archived], 1)
    assert not fs_storage.local.exists(archived)


def test_a_shorter_grace_period_takes_younger_files(files):
    result = run_command("--older-than", "0")
    assert sorted(result["orphans"]) == sorted([files["orphan"], files["young"]])


def test_a_row_committed_for_a_later_page_keeps_its_file(unique):
    first, second = saved(f"{unique}-1.txt"), saved(f"{unique}-2.txt")
    age(first, second)

    def commit_a_reference(scanned: int) -> None:
        if scanned == 1:
            Plain.objects.create(file=second)

    report = orphans.run(fs_storage, delete=True, batch=1, progress=commit_a_reference)
    assert report.orphans == [first]
    assert fs_storage.local.exists(second)
    assert not fs_storage.local.exists(first)


def test_a_row_committed_between_the_look_up_and_the_deletion_keeps_its_file(unique):
    first, second = saved(f"{unique}-1.txt"), saved(f"{unique}-2.txt")
    age(first, second)
    report = orphans.run(
        fs_storage, delete=True, batch=10,
        progress=lambda scanned: Album.objects.create(cover=first),
    )  # fmt: skip
    assert report.orphans == [second]
    assert fs_storage.local.exists(first)
    assert StoredFile.objects.filter(name=first, status=Status.PENDING).exists()


def test_a_file_saved_again_during_the_run_is_not_deleted(unique):
    name = saved(f"{unique}.txt")
    age(name)
    from queued_storage.state import FileState

    def save_again(scanned: int) -> None:
        fs_storage.state.record(name, FileState(Status.PENDING, "newer", 1))

    report = orphans.run(fs_storage, delete=True, progress=save_again)
    assert report.orphans == []
    assert fs_storage.local.exists(name)
    assert fs_storage.get_state(name).version == "newer"


def test_a_generated_ledger_is_read_in_pages_of_the_batch_size():
    from queued_storage.state import name_hash

    old = timezone.now() - timedelta(days=2)
    names = [f"generated/{i:04}.bin" for i in range(47)]
    StoredFile.objects.bulk_create(
        StoredFile(
            storage="fs", name=name, name_hash=name_hash(name), version="v",
            status=Status.TRANSFERRED, size=10,
        )
        for name in names
    )  # fmt: skip
    StoredFile.objects.update(updated=old)
    Plain.objects.bulk_create(Plain(file=name) for name in names[::3])
    refs = len(orphans.references(fs_storage))
    with (
        CaptureQueriesContext(connection) as queries,
        CaptureQueriesContext(connections["other"]) as elsewhere,
    ):
        report = orphans.run(fs_storage, batch=10)
    pages = 5  # 47 rows in pages of 10, then an empty page ends the scan.
    assert len(queries) + len(elsewhere) == pages * (1 + refs) + 1
    # The rows of testapp.Archive are looked up where they live, once a page.
    assert len(elsewhere) == pages
    ledger = [q["sql"] for q in queries if "queued_storage_storedfile" in q["sql"]]
    assert len(ledger) == pages + 1
    assert all("LIMIT 10" in sql for sql in ledger)
    expected = [name for i, name in enumerate(names) if i % 3]
    assert report.orphans == expected
    assert (report.scanned, report.bytes) == (47, 10 * len(expected))


def test_a_storage_no_field_uses_is_skipped(fs_queued):
    lonely = fs_queued(reference="lonely")
    lonely.save("a.txt", ContentFile(b"a"))
    with pytest.raises(ValueError, match="No model field"):
        orphans.run(lonely, older_than=timedelta(0))
    err = io.StringIO()
    call_command(
        "queued_storage", "orphans", "--storage", "lonely", "--older-than", "0",
        "--delete", stdout=io.StringIO(), stderr=err,
    )  # fmt: skip
    assert "Skipped lonely" in err.getvalue()
    assert lonely.local.exists("a.txt")


def test_the_periodic_task_counts_and_deletes_when_asked(files):
    assert tasks.orphans() >= 1
    assert fs_storage.local.exists(files["orphan"])
    tasks.orphans(delete=True)
    assert not fs_storage.local.exists(files["orphan"])
    assert fs_storage.local.exists(files["plain"])


def test_the_periodic_task_takes_no_shorter_grace_from_its_unsigned_message(files):
    # Anyone who can write to the broker can send this task: a grace under a
    # day, or a delete flag that is not True, changes nothing.
    tasks.orphans(older_than=0, delete="yes")
    tasks.orphans(older_than=-1, delete=1)
    assert fs_storage.local.exists(files["orphan"])
    tasks.orphans(older_than=0, delete=True)
    assert not fs_storage.local.exists(files["orphan"])
    assert fs_storage.local.exists(files["young"])


def test_the_admin_view_shows_the_counts(files, admin_client):
    response = admin_client.get("/admin/queued_storage/storedfile/orphans/")
    assert response.status_code == 200
    rows = {row["reference"]: row for row in response.context["rows"]}
    assert rows["fs"]["found"] == 1
    assert fs_storage.local.exists(files["orphan"])


def test_the_admin_view_is_refused_to_staff_who_may_not_view_the_ledger(
    files, client, django_user_model
):
    staff = django_user_model.objects.create_user("clerk", is_staff=True)
    client.force_login(staff)
    response = client.get("/admin/queued_storage/storedfile/orphans/")
    assert response.status_code == 403
    assert fs_storage.local.exists(files["orphan"])


def test_bad_arguments_are_refused():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--batch"):
        call_command("queued_storage", "orphans", "--batch", "0")


def test_a_table_that_cannot_be_read_stops_the_run_before_any_deletion(files):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE testapp_album RENAME TO testapp_album_away")
    try:
        with pytest.raises(Exception, match="testapp_album"):
            orphans.run(fs_storage, delete=True)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE testapp_album_away RENAME TO testapp_album")
    assert fs_storage.local.exists(files["orphan"])
    assert StoredFile.objects.filter(name=files["orphan"]).exists()


def test_hostile_names_are_looked_up_as_data(unique):
    names = [
        saved(f'{unique}/it\'s "quoted" %_ ; DROP TABLE x.txt'),
        saved(f"{unique}/üñí €.txt"),
    ]
    Plain.objects.create(file=names[0])
    age(*names)
    report = orphans.run(fs_storage, delete=True)
    assert report.orphans == [names[1]]
    assert fs_storage.local.exists(names[0])


def test_orphans_of_another_host_are_left_to_that_host(unique):
    name = saved(f"{unique}-theirs.txt")
    age(name)
    StoredFile.objects.filter(name=name).update(host="another-host")
    assert orphans.run(fs_storage, delete=True).orphans == []
    assert fs_storage.local.exists(name)
    with override_settings(QUEUED_STORAGE_SHARED_LOCAL=True):
        assert orphans.run(fs_storage).orphans == [name]


def test_a_progress_bar_shows_on_a_terminal_only(unique):
    import os
    import pty
    import subprocess
    import sys
    from pathlib import Path

    names = [saved(f"{unique}-tty-{i}.txt") for i in range(3)]
    age(*names)
    primary, replica = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "queued_storage", "orphans",
         "--storage", "fs", "--batch", "1"],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=replica, stdout=replica, stderr=replica,
        env={**os.environ, "QS_TEST_WORKER": "1"},
    )  # fmt: skip
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
    os.close(primary)
    assert process.wait(timeout=120) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "\r[" in text and "3/3" in text
    assert "Found 3 orphans" in text


def test_a_file_referenced_by_a_model_no_database_migrates_is_kept(files):
    """A legacy or unmanaged table is still read where the router reads it."""
    routers = ["tests.routers.NoMigrationsForAlbumRouter"]
    with override_settings(DATABASE_ROUTERS=routers):
        result = run_command("--delete")
    assert result["orphans"] == [files["orphan"]]
    for key in ("cover", "back"):
        assert fs_storage.local.exists(files[key]), key
        assert StoredFile.objects.filter(name=files[key]).exists(), key


def test_a_save_over_an_orphan_during_its_deletion_keeps_its_bytes(unique, monkeypatch):
    """A save of the orphan's name on an overwriting disk is not taken with it."""
    from django.conf import settings

    from queued_storage.backends import QueuedStorage
    from queued_storage.state import StateStore

    fs = "django.core.files.storage.FileSystemStorage"
    storage = QueuedStorage(
        local=fs,
        remote=fs,
        local_options={"location": settings.MEDIA_ROOT, "allow_overwrite": True},
        remote_options={"location": settings.MEDIA_ROOT + "-remote"},
        reference="fs",
        delayed=True,
    )
    name = storage.save(f"orphans/{unique}-over.txt", ContentFile(b"older"))
    age(name)
    remember = StateStore.remember

    def save_lands(store: StateStore, changed: str, state: Any) -> None:
        remember(store, changed, state)
        if changed == name and state.is_deleted:
            # A save of the same name writes its bytes right after the claim.
            storage.local.save(name, ContentFile(b"newer"))

    monkeypatch.setattr(StateStore, "remember", save_lands)
    assert name not in [orphan.name for orphan in orphans.scan(storage, delete=True)]
    with storage.local.open(name) as local:
        assert local.read() == b"newer"
