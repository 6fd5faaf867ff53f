"""Storage calls from async code: async views, a real ASGI server, asyncio.run().

Each read starts on a cold cache, so the ledger answers; the files are
recorded as transferred while their local copies stay, so only the ledger
(not a probe of the storages) can tell that the remote serves them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from queued_storage.models import StoredFile
from tests.otherapps.files import forget_cached_state, png, put_transferred
from tests.otherapps.models import Picture

IMAGE = png()


def make_picture(unique: str) -> tuple[Picture, str]:
    storage = Picture._meta.get_field("image").storage
    name = put_transferred(storage, f"pictures/{unique}.png", IMAGE)
    forget_cached_state(storage, name)
    return Picture.objects.create(image=name), name


def expected(name: str) -> dict[str, object]:
    return {
        "url": f"/remote/{name}",
        "exists": True,
        "size": len(IMAGE),
        "head": IMAGE[:4].hex(),
    }


@pytest.mark.django_db
def test_async_view_renders_url_exists_and_size_on_a_cold_cache(unique):
    """The ledger query runs in the test's thread, inside its transaction."""
    picture, name = make_picture(unique)
    response = async_to_sync(AsyncClient().get)(f"/other-apps/picture/{picture.pk}/")
    assert response.status_code == 200, response.content
    assert response.json() == expected(name)


@pytest.mark.django_db(transaction=True)
def test_storage_reads_and_writes_work_in_asyncio_run(fs_queued, unique):
    """Without a Django thread to borrow, a thread of queued_storage runs them."""
    storage = fs_queued()
    name = put_transferred(storage, f"run/{unique}.txt", b"hello")
    forget_cached_state(storage, name)

    async def use_it() -> tuple[str, bool, int, str]:
        from django.core.files.base import ContentFile

        saved = storage.save(f"run/{unique}-new.txt", ContentFile(b"new"))
        storage.delete(saved)
        return storage.url(name), storage.exists(name), storage.size(name), saved

    url, exists, size, saved = asyncio.run(use_it())
    assert url == storage.remote.url(name)
    assert (exists, size) == (True, 5)
    row = StoredFile.objects.get(storage=storage.reference, name=saved)
    assert row.status == "deleted"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_real_asgi_server_serves_the_queued_file_of_an_async_view(unique):
    from tests.services.asgi import UvicornServer

    picture, name = make_picture(unique)
    with UvicornServer() as server:
        url = f"{server.url}/other-apps/picture/{picture.pk}/"
        with urllib.request.urlopen(url, timeout=20) as response:  # noqa: S310
            assert response.status == 200
            body = json.load(response)
    assert body == expected(name)


@pytest.mark.django_db(transaction=True)
def test_the_ledger_thread_keeps_no_connection_open_after_a_query():
    from django.db import connections

    from queued_storage import ledger_access

    def used_connection():
        wrapper = connections["default"]
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
        return wrapper, threading.get_ident()

    async def query():
        return ledger_access.run(used_connection, using="default")

    wrapper, thread = asyncio.run(query())
    assert thread != threading.get_ident()
    assert wrapper.connection is None


@pytest.mark.django_db(transaction=True)
def test_save_from_async_code_queues_when_the_callers_transaction_commits(
    fs_queued, unique
):
    from django.core.files.base import ContentFile
    from django.db import transaction

    from queued_storage.signals import file_queued

    storage = fs_queued(delayed=True)
    queued = []

    def received(sender, name, **kwargs):
        queued.append(name)

    async def save() -> str:
        return storage.save(f"async/{unique}.txt", ContentFile(b"x"))

    file_queued.connect(received)
    try:
        with transaction.atomic():
            name = async_to_sync(save)()
            assert queued == []
        assert queued == [name]
    finally:
        file_queued.disconnect(received)


def test_django_allow_async_unsafe_keeps_the_query_in_the_calling_thread(
    monkeypatch,
):
    from queued_storage import ledger_access

    async def where() -> tuple[int, int]:
        return threading.get_ident(), ledger_access.run(
            threading.get_ident, using="default"
        )

    caller, runner = asyncio.run(where())
    assert caller != runner
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    caller, runner = asyncio.run(where())
    assert caller == runner


def test_queries_inside_a_thread_sensitive_context_share_its_thread():
    """As in an ASGI request: the thread sync_to_async() would pick runs them."""
    from asgiref.sync import ThreadSensitiveContext, sync_to_async

    from queued_storage import ledger_access

    async def threads() -> tuple[int, int, int, int]:
        async with ThreadSensitiveContext():
            first = ledger_access.run(threading.get_ident, using="default")
            second = ledger_access.run(threading.get_ident, using="default")
            django = await sync_to_async(threading.get_ident)()
        return threading.get_ident(), first, second, django

    loop_thread, first, second, django = asyncio.run(threads())
    assert first == second == django
    assert first != loop_thread


@pytest.mark.skipif(
    "executor"
    not in __import__("inspect")
    .signature(__import__("asgiref.sync").sync.ThreadSensitiveContext)
    .parameters,
    reason="this asgiref has no contexts that end before their tasks",
)
def test_a_task_outliving_its_context_is_served_by_the_ledger_threads():
    """asgiref refuses such a task its context's thread; the ledger's own runs it."""
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import ThreadSensitiveContext

    from queued_storage import ledger_access

    async def outlive() -> str:
        ended = asyncio.Event()

        async def late() -> str:
            await ended.wait()
            return ledger_access.run(
                lambda: threading.current_thread().name, using="default"
            )

        with ThreadPoolExecutor(max_workers=1) as executor:
            async with ThreadSensitiveContext(executor=executor):
                task = asyncio.create_task(late())
            ended.set()
            return await task

    assert asyncio.run(outlive()).startswith("queued_storage")


def test_without_ledger_a_save_from_async_code_is_queued_at_once(fs_queued, unique):
    from django.core.files.base import ContentFile
    from django.test import override_settings

    from queued_storage.signals import file_queued

    queued = []

    def received(sender, name, **kwargs):
        queued.append(name)

    async def save() -> tuple[str, list[str]]:
        name = storage.save(f"async-ledgerless/{unique}.txt", ContentFile(b"x"))
        return name, list(queued)

    with override_settings(QUEUED_STORAGE_LEDGER=False):
        storage = fs_queued(delayed=True)
        file_queued.connect(received)
        try:
            name, seen_in_save = asyncio.run(save())
        finally:
            file_queued.disconnect(received)
    assert seen_in_save == [name]
