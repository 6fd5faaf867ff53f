"""Leases and due retries in the ledger, step by step, without a worker.

The messages these tests send go to a queue of their own that nobody
consumes; the tests run the state machine themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from queued_storage import dispatch, leases, operations
from queued_storage.leases import Claim
from queued_storage.machine import FileTransfer, Policy
from queued_storage.models import StoredFile
from queued_storage.state import Status

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def storage(fs_queued, unique):
    # The dispatcher of a worker node running in this process (the suite's
    # worker thread) stays out: it would send the rows these tests dispatch.
    with override_settings(
        QUEUED_STORAGE_QUEUE=f"leases-{unique}", QUEUED_STORAGE_WORKER_DISPATCH=False
    ):
        yield fs_queued()


def row(storage, name):
    return StoredFile.objects.get(storage=storage.reference, name=name)


def machine(transfer, sent=None, **policy):
    """Return a state machine whose retries are recorded in *sent*."""

    def send_retry(queued, name, version, delay):
        if sent is not None:
            sent.append((name, version, delay))
        return True

    return FileTransfer(
        Policy(**{"retries": 2, "lease": 30, **policy}),
        transfer=transfer,
        after_transfer=lambda queued, name: None,
        send_retry=send_retry,
        sender=FileTransfer,
    )


def test_a_second_claim_under_a_live_lease_steps_aside_uncounted(storage):
    name = storage.save("leased.txt", ContentFile(b"x"))
    version = row(storage, name).version
    first = leases.claim(storage.state, name, version, "owner-a", 30)
    second = leases.claim(storage.state, name, version, "owner-b", 30)
    assert (first.claim, first.state.attempts) == (Claim.TAKEN, 1)
    assert second.claim is Claim.BUSY
    found = row(storage, name)
    assert (found.status, found.attempts, found.lease_owner) == (
        Status.TRANSFERRING, 1, "owner-a",
    )  # fmt: skip


def test_an_expired_lease_is_taken_over_and_fences_the_old_owner(storage):
    name = storage.save("expired.txt", ContentFile(b"x"))
    version = row(storage, name).version
    mine = leases.claim(storage.state, name, version, "owner-a", 30)
    assert mine.claim is Claim.TAKEN
    StoredFile.objects.filter(name=name).update(
        lease_expires=timezone.now() - timedelta(seconds=1)
    )
    assert not leases.renew(storage.state, name, version, "owner-b", 30)
    taken = leases.claim(storage.state, name, version, "owner-b", 30)
    assert (taken.claim, taken.state.attempts) == (Claim.TAKEN, 2)
    assert not leases.renew(storage.state, name, version, "owner-a", 30)
    done = taken.state.evolve(status=Status.TRANSFERRED)
    assert not storage.state.compare_and_set(name, version, done, owner="owner-a")
    assert storage.state.compare_and_set(name, version, done, owner="owner-b")
    found = row(storage, name)
    assert (found.status, found.attempts, found.lease_owner) == (
        Status.TRANSFERRED, 2, "",
    )  # fmt: skip


def test_reconcile_leaves_a_live_lease_alone_and_recovers_an_expired_one(storage):
    name = storage.save("orphan.txt", ContentFile(b"x"))
    version = row(storage, name).version
    leases.claim(storage.state, name, version, "owner-a", 30)
    zero = timedelta(0)
    assert operations.reconcile(zero, storage=storage.reference) == []
    assert operations.status_counts(storage.reference)["expired_leases"] == 0
    StoredFile.objects.filter(name=name).update(
        lease_expires=timezone.now() - timedelta(seconds=1)
    )
    assert operations.status_counts(storage.reference)["expired_leases"] == 1
    assert operations.reconcile(storage=storage.reference) == [name]


def test_a_failed_attempt_records_when_its_retry_is_due(storage):
    name = storage.save("flaky.txt", ContentFile(b"x"))
    version = row(storage, name).version
    sent = []
    runner = machine(lambda *a, **k: False, sent, retry_delay=10, countdown_max=60)
    assert runner.run(storage, name, version) is False
    found = row(storage, name)
    assert (found.status, found.attempts, found.outbox) == (Status.PENDING, 1, False)
    assert [(n, v) for n, v, _ in sent] == [(name, version)]
    assert 5 <= sent[0][2] <= 10
    assert found.next_attempt > timezone.now()
    # A copy of the message arriving before the retry is due counts nothing.
    assert runner.run(storage, name, version) is False
    assert (row(storage, name).attempts, len(sent)) == (1, 1)


def test_a_retry_longer_than_the_countdown_limit_waits_in_the_ledger(storage):
    name = storage.save("later.txt", ContentFile(b"x"))
    version = row(storage, name).version
    sent = []
    runner = machine(lambda *a, **k: False, sent, retry_delay=600, countdown_max=60)
    runner.run(storage, name, version)
    found = row(storage, name)
    assert (found.status, found.outbox, sent) == (Status.PENDING, True, [])
    assert dispatch.dispatch(storage=storage.reference) == []
    assert operations.reconcile(storage=storage.reference) == []
    StoredFile.objects.filter(name=name).update(
        next_attempt=timezone.now() - timedelta(seconds=1)
    )
    assert dispatch.dispatch(storage=storage.reference) == [name]
    assert row(storage, name).outbox is False


def test_the_retry_budget_counts_uploads_not_deliveries(storage):
    name = storage.save("budget.txt", ContentFile(b"x"))
    version = row(storage, name).version
    # Each retry is due long after the replays, however slow the machine; the
    # test makes it due itself.
    runner = machine(lambda *a, **k: False, retry_delay=30, countdown_max=60)
    for attempt in range(1, 4):
        for _ in range(5):  # Replays while the retry is not due.
            runner.run(storage, name, version)
        assert row(storage, name).attempts == attempt
        StoredFile.objects.filter(name=name).update(next_attempt=None)
    found = row(storage, name)
    assert (found.status, found.attempts) == (Status.FAILED, 3)


def test_the_transfer_core_imports_without_celery():
    code = (
        "import sys; sys.modules['celery'] = None\n"
        "from django.conf import settings\n"
        "settings.configure(INSTALLED_APPS=['queued_storage'], DATABASES={\n"
        "    'default': {'ENGINE': 'django.db.backends.sqlite3',\n"
        "                'NAME': ':memory:'}})\n"
        "import django; django.setup()\n"
        "import queued_storage.machine, queued_storage.leases, queued_storage.state\n"
        "import queued_storage.backends, queued_storage.runners\n"
        "from queued_storage.runners import get_runner\n"
        "try:\n"
        "    get_runner('celery').send\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
        env=env, timeout=60,
    )  # fmt: skip
    # The Celery runner imports Celery only when a message is sent.
    assert done.stdout.split() == ["ok"], done.stderr


def test_of_many_simultaneous_deliveries_one_takes_the_lease(storage):
    name = storage.save("crowd.txt", ContentFile(b"x"))
    version = row(storage, name).version
    barrier = threading.Barrier(6)
    claims = []

    def deliver(owner):
        try:
            barrier.wait()
            claims.append(leases.claim(storage.state, name, version, owner, 30).claim)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver, args=(f"o{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(claim.value for claim in claims) == ["busy"] * 5 + ["taken"]
    assert row(storage, name).attempts == 1


def test_a_renewed_lease_outlives_its_length(storage):
    name = storage.save("renewed.txt", ContentFile(b"x"))
    version = row(storage, name).version
    leases.claim(storage.state, name, version, "owner-a", 0.6)
    with leases.Renewal(storage.state, name, version, "owner-a", 0.6) as renewal:
        time.sleep(1.5)  # Two and a half lease lengths.
        busy = leases.claim(storage.state, name, version, "owner-b", 0.6)
    assert busy.claim is Claim.BUSY
    assert not renewal.lost
    assert row(storage, name).attempts == 1


def test_without_the_ledger_a_cache_entry_holds_the_lease(storage):
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        name = storage.save("cached.txt", ContentFile(b"x"))
        version = storage.get_state(name).version
        first = leases.claim(storage.state, name, version, "owner-a", 30)
        second = leases.claim(storage.state, name, version, "owner-b", 30)
        assert (first.claim, second.claim) == (Claim.TAKEN, Claim.BUSY)
        leases.release(storage.state, name, version, "owner-a")
        third = leases.claim(storage.state, name, version, "owner-b", 30)
        assert (third.claim, third.state.attempts) == (Claim.TAKEN, 2)


# What a delivery that does not get the lease is told -------------------------


def test_a_claim_of_a_name_without_a_row_is_stale(storage):
    granted = leases.claim(storage.state, "never-saved.txt", "v", "owner-a", 30)
    assert (granted.claim, granted.state) == (Claim.STALE, None)


@pytest.mark.parametrize("change", ["saved again", "deleted", "failed"])
def test_a_claim_of_a_file_that_moved_on_is_stale_and_uncounted(storage, change):
    name = storage.save(f"moved-on-{change[0]}.txt", ContentFile(b"x"))
    version = row(storage, name).version
    if change == "saved again":
        StoredFile.objects.filter(name=name).update(version="newer")
    elif change == "deleted":
        storage.delete(name)
    else:
        StoredFile.objects.filter(name=name).update(status=Status.FAILED)
    granted = leases.claim(storage.state, name, version, "owner-a", 30)
    assert granted.claim is Claim.STALE
    found = row(storage, name)
    assert (found.attempts, found.lease_owner) == (0, "")


def test_a_claim_of_a_transferred_file_is_done(storage):
    name = storage.save("transferred.txt", ContentFile(b"x"))
    version = row(storage, name).version
    StoredFile.objects.filter(name=name).update(status=Status.TRANSFERRED)
    granted = leases.claim(storage.state, name, version, "owner-a", 30)
    assert (granted.claim, granted.state.status) == (Claim.DONE, Status.TRANSFERRED)
    assert row(storage, name).attempts == 0


def test_a_claim_before_the_retry_is_due_is_early_and_uncounted(storage):
    name = storage.save("not-yet.txt", ContentFile(b"x"))
    version = row(storage, name).version
    StoredFile.objects.filter(name=name).update(
        next_attempt=timezone.now() + timedelta(hours=1)
    )
    granted = leases.claim(storage.state, name, version, "owner-a", 30)
    assert granted.claim is Claim.EARLY
    assert (row(storage, name).attempts, row(storage, name).status) == (
        0, Status.PENDING,
    )  # fmt: skip


def test_only_the_owner_renews_and_releases_a_ledger_lease(storage):
    name = storage.save("owned.txt", ContentFile(b"x"))
    version = row(storage, name).version
    leases.claim(storage.state, name, version, "owner-a", 30)
    assert not leases.renew(storage.state, name, version, "owner-b", 30)
    leases.release(storage.state, name, version, "owner-b")
    assert row(storage, name).lease_owner == "owner-a"
    assert leases.renew(storage.state, name, version, "owner-a", 30)
    leases.release(storage.state, name, version, "owner-a")
    found = row(storage, name)
    assert (found.lease_owner, found.lease_expires) == ("", None)


def test_a_renewal_that_finds_its_lease_taken_stops_and_says_so(storage, caplog):
    name = storage.save("taken-over.txt", ContentFile(b"x"))
    version = row(storage, name).version
    leases.claim(storage.state, name, version, "owner-a", 0.15)
    with leases.Renewal(storage.state, name, version, "owner-a", 0.15) as renewal:
        StoredFile.objects.filter(name=name).update(lease_owner="owner-b")
        for _ in range(200):  # At most 10 s.
            if renewal.lost:
                break
            time.sleep(0.05)
    assert renewal.lost
    assert row(storage, name).lease_owner == "owner-b"
    assert any("Lost the lease" in r.getMessage() for r in caplog.records)


def test_a_renewal_goes_on_after_a_failed_attempt(storage, caplog, monkeypatch):
    name = storage.save("flaky-renewal.txt", ContentFile(b"x"))
    version = row(storage, name).version
    leases.claim(storage.state, name, version, "owner-a", 0.15)
    calls = []
    renew = leases.renew

    def flaky_renew(*args):
        calls.append(args)
        if len(calls) == 1:
            raise ConnectionError("database went away")
        return renew(*args)

    monkeypatch.setattr(leases, "renew", flaky_renew)
    with leases.Renewal(storage.state, name, version, "owner-a", 0.15) as renewal:
        for _ in range(200):  # At most 10 s.
            if len(calls) >= 3:
                break
            time.sleep(0.05)
    assert len(calls) >= 3
    assert not renewal.lost
    assert any("Could not renew a lease" in r.getMessage() for r in caplog.records)


# Without the ledger: the cache's lease ---------------------------------------


@pytest.fixture
def cache_only(storage):
    with override_settings(QUEUED_STORAGE_LEDGER=False):
        yield storage


def test_without_the_ledger_claims_of_files_that_moved_on_are_stale(cache_only):
    storage = cache_only
    unknown = leases.claim(storage.state, "unknown.txt", "v", "owner-a", 30)
    name = storage.save("cached-moved.txt", ContentFile(b"x"))
    version = storage.get_state(name).version
    other_version = leases.claim(storage.state, name, "not-" + version, "o", 30)
    failed_name = storage.save("cached-failed.txt", ContentFile(b"x"))
    failed_version = storage.get_state(failed_name).version
    storage.state.remember(
        failed_name, storage.get_state(failed_name).evolve(status=Status.FAILED)
    )
    failed = leases.claim(storage.state, failed_name, failed_version, "o", 30)
    storage.delete(name)
    deleted = leases.claim(storage.state, name, version, "owner-a", 30)
    assert [g.claim for g in (unknown, other_version, failed, deleted)] == [
        Claim.STALE
    ] * 4


def test_without_the_ledger_a_claim_of_a_remote_file_is_done(cache_only):
    storage = cache_only
    name = storage.save("cached-remote.txt", ContentFile(b"x"))
    state = storage.get_state(name)
    storage.state.remember(name, state.evolve(status=Status.TRANSFERRED))
    granted = leases.claim(storage.state, name, state.version, "owner-a", 30)
    assert granted.claim is Claim.DONE


def test_without_the_ledger_only_the_owner_renews_a_lease(cache_only):
    storage = cache_only
    name = storage.save("cached-renew.txt", ContentFile(b"x"))
    version = storage.get_state(name).version
    leases.claim(storage.state, name, version, "owner-a", 30)
    assert not leases.renew(storage.state, name, version, "owner-b", 30)
    assert leases.renew(storage.state, name, version, "owner-a", 30)
    leases.release(storage.state, name, version, "owner-b")
    assert leases.claim(storage.state, name, version, "o", 30).claim is Claim.BUSY


def test_without_the_ledger_a_delete_during_the_claim_gives_the_lease_back(
    cache_only, monkeypatch
):
    storage = cache_only
    name = storage.save("cached-race.txt", ContentFile(b"x"))
    version = storage.get_state(name).version
    cache = storage.state.cache
    add = cache.add

    def add_then_delete(key, value, timeout=None):
        added = add(key, value, timeout=timeout)
        storage.delete(name)  # Lands between the lease and the state change.
        return added

    monkeypatch.setattr(cache, "add", add_then_delete)
    granted = leases.claim(storage.state, name, version, "owner-a", 30)
    monkeypatch.undo()
    assert granted.claim is Claim.STALE
    assert cache.get(f"{storage.state.key(name)}:lease") is None


def test_without_the_ledger_a_cache_failing_at_the_lease_transfers_anyway(
    cache_only, monkeypatch, caplog
):
    storage = cache_only
    name = storage.save("cached-down.txt", ContentFile(b"x"))
    version = storage.get_state(name).version

    def refused(*args, **kwargs):
        raise ConnectionError("Connection refused")

    # The cache answered the state a moment ago and fails at the lease.
    monkeypatch.setattr(storage.state.cache, "add", refused)
    granted = leases.claim(storage.state, name, version, "owner-a", 30)
    assert (granted.claim, granted.state.status) == (Claim.TAKEN, Status.TRANSFERRING)
    assert any("transferring without a lease" in r.getMessage() for r in caplog.records)


def test_without_the_ledger_a_lease_outlives_a_cache_that_goes_down(cache_only, caplog):
    from tests.services.base import free_port

    storage = cache_only
    name = storage.save("cached-outage.txt", ContentFile(b"x"))
    version = storage.get_state(name).version
    assert leases.claim(storage.state, name, version, "o", 30).claim is Claim.TAKEN
    down = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
    with override_settings(CACHES={**settings.CACHES, "down": down}):
        with override_settings(QUEUED_STORAGE_CACHE="down"):
            # The upload goes on: a renewal counts as kept...
            assert leases.renew(storage.state, name, version, "o", 30)
            # ...and a release leaves the lease to expire.
            leases.release(storage.state, name, version, "o")
    messages = [r.getMessage() for r in caplog.records]
    assert any("lease not renewed" in m for m in messages)
    assert any("lease left to expire" in m for m in messages)
    assert leases.claim(storage.state, name, version, "x", 30).claim is Claim.BUSY


@pytest.mark.parametrize("seconds", [0.03, 0.6, 60])
def test_a_lease_of_any_length_is_renewed_three_times_before_it_expires(
    storage, seconds
):
    renewal = leases.Renewal(storage.state, "any.txt", "v", "owner-a", seconds)
    assert renewal.every * 3 == pytest.approx(seconds)


def test_a_lease_shorter_than_a_second_is_flagged(storage):
    from queued_storage import checks

    with override_settings(QUEUED_STORAGE_LEASE=0.5):
        found = [m.id for m in checks.check_settings()]
        assert found == ["queued_storage.W027"]
    with override_settings(QUEUED_STORAGE_LEASE=1):
        assert [m.id for m in checks.check_settings()] == []


# One thread renews every lease of a process ----------------------------------


def _renewer_threads():
    return [t for t in threading.enumerate() if t.name == "queued-storage-leases"]


def claimed(storage, prefix, i, seconds):
    """Save a file, take its lease as owner ``o-<i>``; return its Renewal."""
    name = storage.save(f"{prefix}-{i}.txt", ContentFile(b"x"))
    version = row(storage, name).version
    granted = leases.claim(storage.state, name, version, f"o-{i}", seconds)
    assert granted.claim is Claim.TAKEN
    return leases.Renewal(storage.state, name, version, f"o-{i}", seconds)


def test_one_thread_renews_every_lease_held_at_once(storage):
    held = [claimed(storage, "many", i, 0.6) for i in range(3)]
    for renewal in held:
        renewal.__enter__()
    try:
        time.sleep(1.5)  # Two and a half lease lengths.
        assert len(_renewer_threads()) == 1
        for renewal in held:
            name, version = renewal.args[1], renewal.args[2]
            busy = leases.claim(storage.state, name, version, "thief", 0.6)
            assert busy.claim is Claim.BUSY, name
            assert not renewal.lost
    finally:
        for renewal in held:
            renewal.__exit__(None, None, None)
    # The thread stays for the next transfer, holding no lease.
    assert len(_renewer_threads()) == 1
    assert not leases.renewer().leases


def test_a_lease_released_after_the_with_block_is_not_renewed_or_reported_lost(
    storage, caplog
):
    name = storage.save("released.txt", ContentFile(b"x"))
    version = row(storage, name).version
    leases.claim(storage.state, name, version, "owner-a", 0.15)
    with leases.Renewal(storage.state, name, version, "owner-a", 0.15) as renewal:
        time.sleep(0.2)
    # As the state machine does once the upload ends: the outcome releases it.
    leases.release(storage.state, name, version, "owner-a")
    time.sleep(0.5)  # Ten renewal periods.
    assert not renewal.lost
    assert (row(storage, name).lease_owner, row(storage, name).lease_expires) == (
        "", None,
    )  # fmt: skip
    assert not any("Lost the lease" in r.getMessage() for r in caplog.records)


def test_a_forked_process_renews_its_leases_with_a_thread_of_its_own(storage):
    name = storage.save("forked.txt", ContentFile(b"x"))
    version = row(storage, name).version
    leases.claim(storage.state, name, version, "owner-a", 0.6)
    with leases.Renewal(storage.state, name, version, "owner-a", 0.6):
        parent = leases.renewer()
        for connection in connections.all(initialized_only=True):
            connection.close()  # The child opens its own.
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                mine = leases.renewer()
                other = storage.save("forked-child.txt", ContentFile(b"y"))
                other_version = row(storage, other).version
                leases.claim(storage.state, other, other_version, "child", 0.6)
                with leases.Renewal(
                    storage.state, other, other_version, "child", 0.6
                ) as renewal:
                    time.sleep(1.5)
                    busy = leases.claim(
                        storage.state, other, other_version, "thief", 0.6
                    )
                code = 0 if (
                    mine is not parent and mine.pid == os.getpid()
                    and busy.claim is Claim.BUSY and not renewal.lost
                ) else 3  # fmt: skip
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        # The parent's own lease went on being renewed meanwhile.
        busy = leases.claim(storage.state, name, version, "thief", 0.6)
    assert os.waitstatus_to_exitcode(status) == 0
    assert busy.claim is Claim.BUSY


@pytest.mark.slow
def test_a_hundred_leases_held_at_once_all_stay_live(storage, caplog):
    held = []
    for i in range(100):
        held.append(claimed(storage, "hundred", i, 3))
        held[-1].__enter__()
    try:
        # One thread renews them one after another: on a loaded machine a round
        # of a hundred takes more than a second, which a lease of 3 s outlasts.
        time.sleep(4.0)  # More than a lease length, four renewal periods.
        for renewal in held:
            name, version = renewal.args[1], renewal.args[2]
            busy = leases.claim(storage.state, name, version, "thief", 3)
            assert busy.claim is Claim.BUSY, name
    finally:
        for renewal in held:
            renewal.__exit__(None, None, None)
    assert not any(renewal.lost for renewal in held)
    assert len(_renewer_threads()) == 1
    assert not leases.renewer().leases
    assert not any("lease" in r.getMessage() for r in caplog.records)
