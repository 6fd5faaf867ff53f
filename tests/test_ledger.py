"""The ledger under concurrent writers: one compare-and-set wins, the rest see it."""

import threading

import pytest
from django.core.files.base import ContentFile
from django.db import connections, transaction

from queued_storage.models import StoredFile
from queued_storage.state import Status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def storage(fs_queued):
    return fs_queued(delayed=True)


def run_in_threads(count, target):
    barrier = threading.Barrier(count)
    results = [None] * count

    def run(index):
        try:
            barrier.wait()
            results[index] = target(index)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_one_of_many_concurrent_workers_wins_each_transition(storage):
    name = storage.save("contended.txt", ContentFile(b"x"))
    state = storage.get_state(name)
    moving = state.evolve(status=Status.TRANSFERRING, attempts=1)
    wins = run_in_threads(
        8,
        lambda i: storage.state.compare_and_set(
            name, state.version, moving.evolve(attempts=i + 1),
            only_from=(Status.PENDING,),
        ),
    )  # fmt: skip
    assert wins.count(True) == 1
    row = StoredFile.objects.get(name=name, storage=storage.reference)
    assert row.status == Status.TRANSFERRING
    assert row.attempts == wins.index(True) + 1


def test_a_newer_save_beats_every_stale_writer(storage):
    name = storage.save("raced.txt", ContentFile(b"x"))
    stale = storage.get_state(name)
    storage.state.record(name, stale.evolve(version="newer"))

    def stale_writer(i):
        done = stale.evolve(status=Status.TRANSFERRED)
        with transaction.atomic():
            return storage.state.compare_and_set(name, stale.version, done)

    assert run_in_threads(6, stale_writer) == [False] * 6
    row = StoredFile.objects.get(name=name, storage=storage.reference)
    assert (row.status, row.version) == (Status.PENDING, "newer")
    assert storage.get_state(name).version == "newer"


def test_deleted_file_cannot_be_brought_back_by_a_late_writer(storage):
    name = storage.save("gone.txt", ContentFile(b"x"))
    state = storage.get_state(name)
    storage.delete(name)
    done = state.evolve(status=Status.TRANSFERRED)
    assert not storage.state.compare_and_set(name, state.version, done)
    assert StoredFile.objects.get(name=name).status == Status.DELETED
