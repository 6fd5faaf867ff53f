"""Operator commands never put every name into one SQL statement.

SQLite refuses a statement with more than 32,766 parameters (999 before
3.32), PostgreSQL more than 65,535. ``import --dry-run``, ``verify`` and
``retry`` by names, ``reconcile --untracked`` and ``urls()`` look names up a
batch at a time, whatever the number of files or names.
"""

import contextlib
import io
import json
import sqlite3
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from queued_storage import batching
from queued_storage.backends import QueuedS3Storage
from queued_storage.models import StoredFile

pytestmark = pytest.mark.django_db(transaction=True)

#: SQLite's default limit on parameters since 3.32, and a number over it.
UPSTREAM_LIMIT = 32_766
MANY = 33_000


@contextlib.contextmanager
def sqlite_parameter_limit(limit):
    """Lower this connection's limit on SQL parameters, on SQLite."""
    if connection.vendor != "sqlite":
        yield
        return
    connection.ensure_connection()
    raw = connection.connection
    old = raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    try:
        yield
    finally:
        raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, old)


@pytest.fixture
def site(tmp_path, unique):
    return QueuedS3Storage(
        local_options={"location": str(tmp_path / "site")},
        remote_options={"location": f"batch-{unique}"},
        reference=f"batch-{unique}",
    )


def make_files(storage, count):
    """Write *count* one-byte files into the local folder of *storage*."""
    root = Path(storage.local.location)
    for start in range(0, count, 1000):
        folder = root / f"f{start // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(start, min(count, start + 1000)):
            (folder / f"{i}.txt").write_bytes(b"x")


def run(*args):
    out = io.StringIO()
    call_command("queued_storage", *args, stdout=out)
    return out.getvalue()


def test_verify_and_retry_by_33000_names_fit_the_sql_parameter_limit(site):
    names = [f"missing/{i}.txt" for i in range(MANY)]
    # Some builds raise the limit (Debian's to 250,000): use upstream's.
    with sqlite_parameter_limit(UPSTREAM_LIMIT):
        verified = run("verify", "--json", "--storage", site.reference, *names)
        retried = run("retry", "--json", "--storage", site.reference, *names)
    assert json.loads(verified)["mismatches"] == {site.reference: {}}
    assert json.loads(retried)["queued"] == []


def test_lookups_are_batched_under_a_lowered_limit(site, monkeypatch):
    """With 50 names a batch, 60 parameters a statement are enough."""
    make_files(site, 200)
    monkeypatch.setattr(batching, "BATCH_SIZE", 50)
    names = [f"f00/{i}.txt" for i in range(200)]
    with sqlite_parameter_limit(60):
        result = json.loads(
            run("import", "--dry-run", "--json", "--storage", site.reference)
        )
        assert result["done"] == 200
        untracked = json.loads(
            run("reconcile", "--untracked", "--json", "--storage", site.reference)
        )["untracked"][site.reference]
        assert len(untracked) == 200
        verified = json.loads(
            run("verify", "--json", "--storage", site.reference, *names)
        )
        assert verified["mismatches"] == {site.reference: {}}
        assert len(site.urls(names)) == 200
    moved = json.loads(run("import", "--json", "--storage", site.reference))
    assert moved["done"] == 200
    rows = StoredFile.objects.filter(storage=site.reference)
    assert rows.count() == 200


def test_a_lowered_limit_refuses_one_statement_of_every_name(site):
    """The limit above is real: one statement of all the names fails."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's limit on parameters is lowered per connection.")
    from django.db import OperationalError

    names = [f"{i}.txt" for i in range(100)]
    with sqlite_parameter_limit(60), pytest.raises(OperationalError, match="too many"):
        list(StoredFile.objects.filter(name__in=names))


def test_import_report_keeps_counts_and_only_the_first_problems():
    from queued_storage.operations import REPORT_LIMIT, ImportReport

    report = ImportReport()
    for i in range(REPORT_LIMIT + 5):
        report.refuse(f"link-{i}", "a symbolic link, not followed")
        report.fail(f"file-{i}", "OSError: broken")
    assert (report.refusals, report.failures) == (REPORT_LIMIT + 5,) * 2
    assert len(report.refused) == len(report.failed) == REPORT_LIMIT
