"""The ledger's written-out statements behave as the ORM statements they replace.

Each test runs twice: through :mod:`queued_storage.ledger_sql` (the path
SQLite and PostgreSQL take) and through the ORM (the path of every other
database, forced here since the suite has no such database to run).
"""

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from queued_storage import leases, ledger_sql
from queued_storage import state as state_module
from queued_storage.leases import Claim
from queued_storage.models import StoredFile
from queued_storage.state import FileState, Status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["sql", "orm"])
def path(request, monkeypatch):
    if request.param == "orm":
        monkeypatch.setattr(state_module, "statements", lambda alias: None)
        monkeypatch.setattr(leases, "statements", lambda alias: None)
    return request.param


@pytest.fixture
def storage(fs_queued, path):
    return fs_queued(delayed=True, reference="ledger-sql")


def row(storage, name):
    return StoredFile.objects.get(storage=storage.reference, name=name)


def test_the_suites_databases_take_the_written_out_path():
    assert connection.vendor in ledger_sql.VENDORS
    assert ledger_sql.statements("default") is not None


def test_record_inserts_every_field(storage):
    before = timezone.now() - timedelta(seconds=1)
    state = FileState(Status.PENDING, "v1", 12, 0, "", "text/plain")
    storage.state.record("a/b.txt", state, host="web-1")
    found = row(storage, "a/b.txt")
    assert (found.status, found.version, found.size, found.attempts) == (
        Status.PENDING, "v1", 12, 0,
    )  # fmt: skip
    assert (found.content_type, found.host, found.last_error) == (
        "text/plain", "web-1", "",
    )  # fmt: skip
    assert found.transferred is None
    assert found.outbox is False
    assert before <= found.created <= timezone.now()
    assert timedelta(0) <= found.updated - found.created < timedelta(seconds=1)


def test_record_replaces_the_row_of_the_same_name_and_keeps_created(storage):
    storage.state.record("x.bin", FileState(Status.PENDING, "v1", 1), host="h1")
    created = row(storage, "x.bin").created
    done = FileState(Status.TRANSFERRED, "v2", 2, 3, "old error", "image/png")
    storage.state.record("x.bin", done, host="h2", outbox=True)
    assert StoredFile.objects.filter(storage=storage.reference).count() == 1
    found = row(storage, "x.bin")
    assert (found.status, found.version, found.size, found.attempts) == (
        Status.TRANSFERRED, "v2", 2, 3,
    )  # fmt: skip
    assert (found.last_error, found.content_type, found.host) == (
        "old error", "image/png", "h2",
    )  # fmt: skip
    assert found.created == created
    assert found.transferred is not None and found.transferred >= created
    assert found.outbox is True


def test_in_use_sees_live_rows_of_this_storage_only(storage, fs_queued):
    assert not storage.state.in_use("n.txt")
    storage.state.record("n.txt", FileState(Status.PENDING, "v"))
    assert storage.state.in_use("n.txt")
    assert not fs_queued(reference="other").state.in_use("n.txt")
    storage.state.forget("n.txt")
    assert not storage.state.in_use("n.txt")


def test_compare_and_set_applies_only_to_the_version_and_statuses_asked(storage):
    storage.state.record("c.txt", FileState(Status.PENDING, "v1", 5))
    moving = FileState(Status.TRANSFERRING, "v1", None, 1)
    assert not storage.state.compare_and_set("c.txt", "v0", moving)
    assert not storage.state.compare_and_set(
        "c.txt", "v1", moving, only_from=(Status.FAILED, Status.TRANSFERRED)
    )
    assert row(storage, "c.txt").status == Status.PENDING
    assert storage.state.compare_and_set(
        "c.txt", "v1", moving, only_from=(Status.PENDING,)
    )
    found = row(storage, "c.txt")
    assert (found.status, found.attempts, found.size) == (Status.TRANSFERRING, 1, 5)
    assert found.transferred is None
    done = FileState(Status.TRANSFERRED, "v1", 5, 1)
    assert storage.state.compare_and_set("c.txt", "v1", done, checksum="md5:abc")
    found = row(storage, "c.txt")
    assert (found.status, found.checksum) == (Status.TRANSFERRED, "md5:abc")
    assert found.transferred is not None and found.updated >= found.created


def test_compare_and_set_never_revives_a_deleted_file(storage):
    storage.state.record("d.txt", FileState(Status.PENDING, "v1"))
    storage.state.forget("d.txt")
    assert not storage.state.compare_and_set(
        "d.txt", "", FileState(Status.TRANSFERRED, "")
    )
    assert row(storage, "d.txt").status == Status.DELETED


def test_writes_join_the_callers_transaction(storage):
    with pytest.raises(RuntimeError), transaction.atomic():
        storage.state.record("t.txt", FileState(Status.PENDING, "v1"))
        assert storage.state.in_use("t.txt")
        raise RuntimeError("roll back")
    assert not StoredFile.objects.filter(name="t.txt").exists()


@override_settings(QUEUED_STORAGE_NAME_CHECK="state")
def test_a_save_costs_one_statement_and_it_is_logged(storage, path):
    with CaptureQueriesContext(connection) as queries:
        name = storage.save("counted.txt", ContentFile(b"x"))
    statements = [query["sql"] for query in queries.captured_queries]
    kinds = [sql.split(None, 1)[0].upper() for sql in statements]
    if path == "sql":
        # The claim of the name is the write that records the file.
        assert kinds == ["INSERT"], statements
    else:
        # Some Django versions wrap bulk_create() in a transaction of its own.
        control = {"BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"}
        # The ORM's exclusive write: an INSERT, which met no row here.
        assert [k for k in kinds if k not in control] == ["INSERT"]
    assert row(storage, name).status == Status.PENDING


def test_a_claim_takes_the_lease_and_counts_the_attempt(storage):
    name = storage.save("lease.txt", ContentFile(b"12345"))
    version = row(storage, name).version
    before = timezone.now()
    granted = leases.claim(storage.state, name, version, "owner-a", 30)
    found = row(storage, name)
    assert granted.claim is Claim.TAKEN
    assert granted.state == FileState.from_row(found)
    assert (granted.state.status, granted.state.size, granted.state.attempts) == (
        Status.TRANSFERRING, 5, 1,
    )  # fmt: skip
    assert found.lease_owner == "owner-a"
    assert before + timedelta(seconds=29) < found.lease_expires
    assert found.lease_expires <= timezone.now() + timedelta(seconds=30)
    assert (found.outbox, found.next_attempt) == (False, None)
    # The cache tells readers the file is moving.
    assert storage.state.get(name).status == Status.TRANSFERRING
    # Another delivery steps aside and counts nothing.
    assert leases.claim(storage.state, name, version, "owner-b", 30).claim is (
        Claim.BUSY
    )
    assert row(storage, name).attempts == 1


def test_a_claim_of_another_version_or_an_early_retry_takes_nothing(storage):
    name = storage.save("early.txt", ContentFile(b"x"))
    version = row(storage, name).version
    stale = leases.claim(storage.state, name, "other", "owner-a", 30)
    assert stale.claim is Claim.STALE
    StoredFile.objects.filter(name=name).update(
        next_attempt=timezone.now() + timedelta(minutes=5)
    )
    assert leases.claim(storage.state, name, version, "owner-a", 30).claim is (
        Claim.EARLY
    )
    assert (row(storage, name).attempts, row(storage, name).lease_owner) == (0, "")


@pytest.mark.parametrize("returning", [True, False])
def test_a_workers_claim_is_one_statement_where_it_can_read_back(
    storage, path, monkeypatch, returning
):
    name = storage.save("one-statement.txt", ContentFile(b"xyz"))
    version = row(storage, name).version
    sql = ledger_sql.statements("default")
    if not returning:
        # As SQLite before 3.35, which has no RETURNING.
        monkeypatch.setattr(sql, "lease_returning_sql", None)
    with CaptureQueriesContext(connection) as queries:
        granted = leases.claim(storage.state, name, version, "owner-a", 30)
    assert granted.claim is Claim.TAKEN
    assert granted.state == FileState.from_row(row(storage, name))
    kinds = [q["sql"].split(None, 1)[0].upper() for q in queries.captured_queries]
    if path == "orm":
        assert kinds == ["UPDATE", "SELECT"]
    elif returning and sql.lease_returning_sql is not None:
        assert kinds == ["UPDATE"]
    else:
        assert kinds == ["UPDATE", "SELECT"]
