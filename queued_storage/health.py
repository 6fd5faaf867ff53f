"""Connect to every part a queued storage needs and say which one fails.

``manage.py queued_storage health`` prints one line per part: the state
cache, the broker (through the project's Celery app), the workers, the
ledger table, and the local and remote storage of each queued storage.
System checks look at settings; these probes talk to the servers.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings

#: Each probe gives up after this many seconds unless told otherwise.
DEFAULT_TIMEOUT = 5.0

#: The name probed on each storage; it is looked up, never written.
PROBE_NAME = "queued-storage-health-probe"


@dataclass(frozen=True)
class Probe:
    """The outcome of probing one part: *ok*, or what is wrong and what to do."""

    part: str
    ok: bool
    detail: str
    hint: str = ""
    #: A warning: worth saying, but no reason for a non-zero exit status.
    warning: bool = False


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """Return ``call()``; raise ``TimeoutError`` if it has not ended in time.

    The call runs in a daemon thread, so a server that accepts a connection
    and never answers cannot hold the caller past *seconds*.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller.
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="queued-storage-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _failed(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


def probe_cache(timeout: float) -> Probe:
    """Write, read and delete a probe key in the cache that holds the states."""
    from django.core.cache import caches

    alias = settings.QUEUED_STORAGE_CACHE
    part = f"cache {alias!r}"
    hint = (
        f"Start the cache server, or fix CACHES[{alias!r}] (LOCATION, OPTIONS) "
        "or QUEUED_STORAGE_CACHE; web processes and workers must share it."
    )
    key, value = f"queued_storage:health:{secrets.token_hex(8)}", secrets.token_hex(8)

    def round_trip() -> Any:
        cache = caches[alias]
        cache.set(key, value, 30)
        try:
            return cache.get(key)
        finally:
            cache.delete(key)

    try:
        found = within(timeout, round_trip)
    except Exception as exc:
        return Probe(part, False, _failed(exc), hint)
    if found != value:
        return Probe(
            part, False, "a key written to it could not be read back", hint
        )  # fmt: skip
    backend = str(settings.CACHES[alias].get("BACKEND", "")).rpartition(".")[2]
    return Probe(part, True, f"wrote, read and deleted a key ({backend})")


def _default_app_loaded(app: Any) -> bool:
    return app.main in (None, "default") and not app.conf.broker_url


def probe_broker(timeout: float) -> Probe:
    """Connect to the broker with the Celery app that sends the transfers."""
    from celery import current_app

    # Resolved here: the probe's thread would see Celery's default app.
    app = cast(Any, current_app)._get_current_object()
    if _default_app_loaded(app):
        return Probe(
            "broker",
            False,
            "no Celery app of the project is loaded: Celery's default app "
            "would send to amqp://localhost and be refused",
            "Import the project's Celery app in the project package's "
            "__init__.py ('from .celery import app as celery_app'), as the "
            "installation page shows.",
        )
    from kombu.utils.url import maybe_sanitize_url

    url = app.conf.broker_url or ""
    part = f"broker {maybe_sanitize_url(url) or '(unset)'} (Celery app {app.main!r})"

    def connect() -> None:
        with app.connection_for_write(connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)

    try:
        within(timeout, connect)
    except Exception as exc:
        return Probe(
            part,
            False,
            _failed(exc),
            "Start the broker, or fix CELERY_BROKER_URL; the broker's transport "
            "may need its extra (pip install 'django-queued-storage[redis]').",
        )
    return Probe(part, True, "connected")


def probe_workers(timeout: float) -> Probe:
    """Ask the workers of the Celery app to answer a ping."""
    from celery import current_app

    # Resolved here: the probe's thread would see Celery's default app.
    app = cast(Any, current_app)._get_current_object()
    if _default_app_loaded(app):
        return Probe("workers", False, "no Celery app of the project is loaded")
    try:
        answers = within(
            timeout + 1, lambda: app.control.ping(timeout=min(timeout, 2.0))
        )
    except Exception as exc:
        return Probe("workers", False, _failed(exc), warning=True)
    if not answers:
        return Probe(
            "workers",
            False,
            "no worker answered; files stay pending until one runs",
            "Start one: celery -A <project> worker --loglevel INFO",
            warning=True,
        )
    names = sorted(name for answer in answers for name in answer)
    return Probe("workers", True, f"{len(names)} answered: {', '.join(names)}")


def probe_ledger(timeout: float) -> Probe:
    """Query the ledger table."""
    from django.db import router

    from .models import StoredFile

    if not settings.QUEUED_STORAGE_LEDGER:
        return Probe("ledger", True, "off (QUEUED_STORAGE_LEDGER = False)")
    alias = router.db_for_write(StoredFile) or "default"
    part = f"ledger table {StoredFile._meta.db_table!r} (database {alias!r})"

    def query() -> None:
        from django.db import connections

        try:
            StoredFile.objects.using(alias).exists()
        finally:
            connections[alias].close()

    try:
        within(timeout, query)
    except Exception as exc:
        return Probe(
            part,
            False,
            _failed(exc),
            "Run 'manage.py migrate queued_storage' (and check DATABASES).",
        )
    return Probe(part, True, "readable")


def probe_outbox(timeout: float) -> Probe:
    """Say whether messages wait in the outbox longer than a dispatcher lets them."""
    from .operations import OUTBOX_HINT, OUTBOX_STUCK, status_counts

    part = "outbox"
    if not settings.QUEUED_STORAGE_LEDGER:
        return Probe(part, True, "off (QUEUED_STORAGE_LEDGER = False)")

    def count() -> dict[str, Any]:
        from django.db import connections

        try:
            return status_counts()
        finally:
            connections.close_all()

    try:
        found = within(timeout, count)
    except Exception as exc:
        return Probe(part, False, _failed(exc), warning=True)
    waiting, waited = found["outbox"], found["outbox_oldest_seconds"]
    if not waiting:
        return Probe(part, True, "empty")
    detail = f"{waiting} waiting, the oldest for {waited or 0:.0f} s"
    if waited is not None and waited > OUTBOX_STUCK:
        return Probe(part, False, detail, OUTBOX_HINT, warning=True)
    return Probe(part, True, detail)


def probe_storage(storage: Any, role: str, timeout: float) -> Probe:
    """Ask the *role* (``"local"`` or ``"remote"``) storage of *storage*."""
    part = f"{role} storage of {storage.reference!r}"

    def ask() -> str:
        target = getattr(storage, role)
        bucket = getattr(target, "bucket_name", None)
        connection = getattr(target, "connection", None)
        if bucket and connection is not None and hasattr(connection, "meta"):
            # S3: a name that is absent passes even without the bucket.
            connection.meta.client.head_bucket(Bucket=bucket)
        target.exists(PROBE_NAME)
        return type(target).__name__

    try:
        kind = within(timeout, ask)
    except Exception as exc:
        hint = (
            "Check the storage's options in STORAGES (bucket, endpoint, "
            "credentials, location) and that its server is up."
        )
        return Probe(part, False, _failed(exc), hint)
    return Probe(part, True, f"answered ({kind})")


def run(timeout: float = DEFAULT_TIMEOUT, storage: str | None = None) -> list[Probe]:
    """Probe every part and return the outcomes, in the order printed."""
    from .checks import queued_storages

    broker = probe_broker(timeout)
    workers = (
        probe_workers(timeout)
        if broker.ok
        else Probe("workers", False, "not asked: the broker is down", warning=True)
    )
    ledger = probe_ledger(timeout)
    probes = [probe_cache(timeout), broker, workers, ledger]
    if ledger.ok:
        probes.append(probe_outbox(timeout))
    errors: list[Any] = []
    for queued in queued_storages(errors):
        if storage and queued.reference != storage:
            continue
        for role in ("local", "remote"):
            probes.append(probe_storage(queued, role, timeout))
    for error in errors:
        probes.append(Probe("storages", False, error.msg, error.hint or ""))
    return probes


def lines(probes: list[Probe]) -> Iterator[str]:
    """Yield one line per probe, and a hint line under each failure."""
    for probe in probes:
        mark = "ok" if probe.ok else ("WARN" if probe.warning else "FAIL")
        yield f"{mark:<4}  {probe.part}: {probe.detail}"
        if not probe.ok and probe.hint:
            yield f"      -> {probe.hint}"
