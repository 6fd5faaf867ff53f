"""``import`` and ``reconcile --untracked`` on a hostile local tree, and the
worker facing a local copy changed or replaced by a link after the save.

Whoever can write into the local folder plants symbolic links to files and
folders outside it, a ``loop -> .`` link, a FIFO, names with terminal escape
sequences and a folder the walk cannot list. Nothing outside the local root
may reach the remote, the walk must finish, and names are printed escaped.
"""

import io
import json
import os
import unicodedata
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command

from queued_storage import operations
from queued_storage.backends import QueuedS3Storage
from queued_storage.models import StoredFile
from queued_storage.state import Status
from tests.conftest import wait_for

BUCKET = "queued-storage-tests"
pytestmark = pytest.mark.django_db(transaction=True)

ESCAPES = "\x1b]0;owned\x07title\x1b[2J.txt"
RLO = "invoice_\u202efdp.exe"
NFD = unicodedata.normalize("NFD", "café.txt")


def deep_folder(parent: Path) -> str:
    """Make a folder below *parent* whose path is too long to be listed.

    Built one level at a time relative to its parent, as only a path over
    the system's limit (4,096 bytes on Linux) makes ``scandir()`` fail, even
    for root.
    """
    fd = os.open(parent, os.O_RDONLY)
    try:
        for _ in range(24):
            os.mkdir("d" * 200, dir_fd=fd)
            inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with open(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as f:
            f.write(b"deep")
    finally:
        os.close(fd)
    return "d" * 200


@pytest.fixture
def hostile(tmp_path, unique):
    """Return a queued S3 storage whose local folder an attacker has written to."""
    site, outside = tmp_path / "site", tmp_path / "outside"
    (site / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (site / "good.txt").write_bytes(b"good")
    (site / "sub" / "ok.txt").write_bytes(b"ok")
    (site / "escape").symlink_to(outside, target_is_directory=True)
    (site / "hostname").symlink_to(outside / "secret.txt")
    (site / "loop").symlink_to(".", target_is_directory=True)
    (site / "sub" / "up").symlink_to("..", target_is_directory=True)
    os.mkfifo(site / "pipe")
    for name in (ESCAPES, RLO, NFD):
        (site / name).write_bytes(b"x")
    too_long = deep_folder(site)
    storage = QueuedS3Storage(
        local_options={"location": str(site)},
        remote_options={"location": f"hostile-{unique}"},
        reference=f"hostile-{unique}",
    )
    storage.too_long = too_long
    return storage


def remote_keys(s3_client, prefix):
    listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
    return sorted(o["Key"][len(prefix) + 1 :] for o in listed.get("Contents", ()))


def run(*args):
    out = io.StringIO()
    call_command("queued_storage", *args, stdout=out)
    return out.getvalue()


def test_import_never_follows_links_and_uploads_only_regular_files_inside_the_root(
    hostile, s3_client
):
    result = json.loads(run("import", "--storage", hostile.reference, "--json"))
    assert remote_keys(s3_client, hostile.remote.location) == ["good.txt", "sub/ok.txt"]
    assert result["done"] == 2 and result["failed"] == {}
    left_out = result["left_out"]
    for link in ("escape", "hostname", "loop", "sub/up"):
        assert left_out[link] == "a symbolic link, not followed"
    assert left_out["pipe"] == "not a regular file"
    assert "invisible character" in left_out[RLO]
    assert "control character" in left_out[ESCAPES]
    assert "rename it to 'café.txt'" in left_out[NFD]
    deep = [k for k in left_out if k.startswith(hostile.too_long + "/")]
    assert len(deep) == 1 and "cannot be listed" in left_out[deep[0]]
    assert result["left_out_count"] == len(left_out) == 9
    rows = StoredFile.objects.filter(storage=hostile.reference)
    assert sorted(rows.values_list("name", flat=True)) == ["good.txt", "sub/ok.txt"]


def test_import_prints_hostile_names_escaped(hostile):
    text = run("import", "--storage", hostile.reference, "--dry-run")
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "left out: \\x1b]0;owned\\x07title\\x1b[2J.txt: " in text
    assert "left out: invoice_\\u202efdp.exe: " in text
    assert "would move: good.txt" in text and "would move: sub/ok.txt" in text
    assert "Would move 2 files; 0 already remote; 0 failed; 9 left out." in text


def test_reconcile_untracked_on_a_hostile_tree_lists_only_files_inside_the_root(
    hostile,
):
    result = json.loads(
        run("reconcile", "--untracked", "--json", "--storage", hostile.reference)
    )
    assert sorted(result["untracked"][hostile.reference]) == ["good.txt", "sub/ok.txt"]
    skipped = result["skipped"][hostile.reference]
    assert {"escape", "hostname", "loop", "sub/up", "pipe", RLO, ESCAPES} <= set(
        skipped
    )
    text = run("reconcile", "--untracked", "--storage", hostile.reference)
    assert "\x1b" not in text and "\u202e" not in text
    assert "untracked in " + hostile.reference + ": good.txt" in text
    assert "skipped in " + hostile.reference + ": \\x1b]0;owned" in text


def test_walk_follows_no_link_and_goes_on_after_an_unlistable_folder(hostile):
    skipped = {}
    names = sorted(
        operations.walk(hostile.local, skipped=lambda n, r: skipped.update({n: r}))
    )
    assert names == sorted(["good.txt", "sub/ok.txt", ESCAPES, RLO, NFD])
    deep = [k for k in skipped if k.startswith(hostile.too_long + "/")]
    assert [skipped[k] for k in deep] == ["cannot be listed: File name too long"]


# The worker -----------------------------------------------------------------


@pytest.fixture(params=["s3", "filesystem"])
def delayed(request, tmp_path, unique, fs_queued):
    """Return a delayed storage whose transfers the test starts, of each kind."""
    if request.param == "s3":
        return QueuedS3Storage(
            local_options={"location": str(tmp_path / "local")},
            remote_options={"location": f"swap-{unique}"},
            reference=f"swap-{unique}",
            delayed=True,
        )
    return fs_queued(delayed=True, reference=f"swap-fs-{unique}")


def remote_has(storage, name):
    return storage.remote.exists(name)


def failed_row(storage, name):
    wait_for(lambda: storage.get_state(name).status == Status.FAILED, timeout=60)
    return StoredFile.objects.get(storage=storage.reference, name=name)


def test_worker_refuses_a_local_copy_whose_size_differs_from_the_saved_one(
    celery_worker, delayed
):
    name = delayed.save("report.txt", ContentFile(b"sixby!"))
    Path(delayed.local.path(name)).write_bytes(b"twenty bytes, not 6!")
    delayed.transfer(name)
    row = failed_row(delayed, name)
    assert row.status == Status.FAILED and row.attempts == 1
    assert row.last_error.startswith("LocalFileChanged: ")
    assert "has 20 bytes, but 6 were saved" in row.last_error
    assert not remote_has(delayed, name)
    assert delayed.using_local(name)


def test_worker_refuses_a_symlink_swapped_in_after_the_save(
    celery_worker, delayed, tmp_path
):
    name = delayed.save("photo.txt", ContentFile(b"sixby!"))
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"SECRET")  # The same size as the saved file.
    path = Path(delayed.local.path(name))
    path.unlink()
    path.symlink_to(secret)
    delayed.transfer(name)
    row = failed_row(delayed, name)
    assert row.last_error.startswith("LocalFileUnsafe: ")
    assert "symbolic link" in row.last_error
    assert not remote_has(delayed, name)


def test_worker_refuses_a_folder_swapped_for_a_symlink_after_the_save(
    celery_worker, delayed, tmp_path
):
    name = delayed.save("album/photo.txt", ContentFile(b"sixby!"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "photo.txt").write_bytes(b"SECRET")
    folder = Path(delayed.local.path("album"))
    (folder / "photo.txt").unlink()
    folder.rmdir()
    folder.symlink_to(elsewhere, target_is_directory=True)
    delayed.transfer(name)
    row = failed_row(delayed, name)
    assert row.last_error.startswith("LocalFileUnsafe: ")
    assert not remote_has(delayed, name)


def test_local_root_that_is_itself_a_link_still_transfers(
    celery_worker, tmp_path, unique
):
    real = tmp_path / "real-media"
    real.mkdir()
    (tmp_path / "media").symlink_to(real, target_is_directory=True)
    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path / "media")},
        remote_options={"location": f"rootlink-{unique}"},
        reference=f"rootlink-{unique}",
    )
    name = storage.save("a/b.txt", ContentFile(b"fine"))
    wait_for(lambda: storage.using_remote(name))
    with storage.remote.open(name) as handle:
        assert handle.read() == b"fine"


def test_save_records_the_bytes_written_so_text_content_transfers(
    celery_worker, fs_queued, unique
):
    storage = fs_queued(reference=f"text-{unique}")
    name = storage.save("notes.txt", ContentFile("ééé"))  # 3 characters, 6 bytes.
    assert storage.get_state(name).size == 6
    wait_for(lambda: storage.using_remote(name))
    with storage.open(name) as handle:
        assert handle.read() == "ééé".encode()
