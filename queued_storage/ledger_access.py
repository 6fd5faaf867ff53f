"""Run ledger queries wherever a storage method is called.

The storage API is synchronous, yet Django calls it from async views too
(``{{ doc.file.url }}`` in a template rendered by one). Django refuses a
database query in a thread that runs an event loop
(``SynchronousOnlyOperation``), so a ledger query asked for from such a
thread runs in the thread where ``sync_to_async(thread_sensitive=True)``
would run it: the thread of the request's synchronous code (or of the test
that called ``async_to_sync()``), with its connection and transaction. When
there is none, it runs in a thread of this module, with a connection of its
own, closed after each use as Django does at the end of a request. The
caller waits for the answer, so it is the one synchronous code gets; the loop
is held for the time of one indexed query, as by any other blocking call in
an async view. ``DJANGO_ALLOW_ASYNC_UNSAFE`` keeps the query in the calling
thread, as Django does.

Only the ledger needs a database: with ``QUEUED_STORAGE_LEDGER = False`` no
storage method opens a connection.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar, cast

from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connections, transaction

from .exceptions import LedgerUnavailable

T = TypeVar("T")

#: Threads that run the ledger queries of callers on an event loop's thread.
WORKERS = 4

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()

_NO_DATABASE = "django.db.backends.dummy"
_WHY = (
    "queued_storage keeps each file's state in its ledger, a database table "
    "(QUEUED_STORAGE_LEDGER = True), and needed it here"
)


def on_event_loop() -> bool:
    """Return whether this thread runs an event loop that forbids queries."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return not os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")


def run(func: Callable[..., T], *args: Any, using: str) -> T:
    """Return ``func(*args)``, a query of database *using*, run where allowed."""
    if connections[using].settings_dict.get("ENGINE") == _NO_DATABASE:
        raise ImproperlyConfigured(
            f"{_WHY}, but DATABASES has no {using!r} database. Configure it, or "
            "set QUEUED_STORAGE_LEDGER = False to keep the states in the cache "
            "only."
        )
    if not on_event_loop():
        return _explained(func, *args)
    django_thread = _thread_sensitive_executor()
    if django_thread is not None:
        return django_thread.submit(_explained, func, *args).result()
    return _executor().submit(_in_thread, func, *args).result()


def on_commit(func: Callable[[], Any], using: str, *, ledger: bool) -> None:
    """Run *func* once the current transaction on *using* commits.

    Outside a transaction it runs at once. Without the ledger a save writes
    nothing to the database, so only a transaction already open in this
    thread delays *func*: none is opened to find out, and a project without
    a database never needs one.
    """
    if on_event_loop():
        if ledger:
            # In the thread that wrote the ledger row, which may be inside a
            # transaction (a synchronous middleware's, a test's).
            run(lambda: transaction.on_commit(func, using=using), using=using)
        else:
            func()
    elif ledger:
        _explained(transaction.on_commit, func, using=using)
    elif connections[using].in_atomic_block:
        transaction.on_commit(func, using=using)
    else:
        func()


def _thread_sensitive_executor() -> Executor | None:
    """Return the executor of the synchronous thread serving this code, if any.

    It is the one asgiref's ``SyncToAsync`` picks in thread-sensitive mode;
    its process-wide single thread is left out, because sync code running
    there may wait for this (now blocked) loop.
    """
    try:
        from asgiref.sync import AsyncToSync, SyncToAsync

        current = getattr(AsyncToSync.executors, "current", None)
        if current is not None:
            return cast(Executor, current)
        context = SyncToAsync.thread_sensitive_context.get(None)
        if context is not None:
            if getattr(context, "_exited", False):
                return None
            executors = SyncToAsync.context_to_thread_executor
            if context not in executors:
                executors[context] = ThreadPoolExecutor(max_workers=1)
            return executors[context]
        loop = asyncio.get_running_loop()
        return cast(Executor | None, AsyncToSync.loop_thread_executors.get(loop))
    except (AttributeError, ImportError):  # pragma: no cover - other asgiref
        return None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="queued_storage")
        return _pool


def _in_thread(func: Callable[..., T], *args: Any) -> T:
    # As Django does around a request: a connection past CONN_MAX_AGE (at
    # once by default) is closed, so that these threads hold none idle.
    close_old_connections()
    try:
        return _explained(func, *args)
    finally:
        close_old_connections()


def _explained(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call *func*, turning a refused database access into a clear error."""
    try:
        return func(*args, **kwargs)
    except RuntimeError as exc:
        if not str(exc).startswith("Database access not allowed"):
            raise
        raise LedgerUnavailable(
            f"{_WHY}, but the test does not allow database access ({exc}). "
            "Mark the test with @pytest.mark.django_db (with transaction=True "
            "when a worker runs its transfers), or override "
            "QUEUED_STORAGE_LEDGER = False for it."
        ) from exc
