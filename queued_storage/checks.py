"""System checks that catch misconfigurations before they cost files.

Ids are never reused; see the settings reference for each.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError, connections, router

PROCESS_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


def queued_storages() -> Iterable[Any]:
    """Yield the queued storages of model fields and of ``STORAGES``."""
    from django.core.files.storage import storages

    from .base import QueuedStorageBase
    from .registry import queued_aliases

    seen: set[int] = set()
    for model in apps.get_models():
        for field in model._meta.get_fields():
            storage = getattr(field, "storage", None)
            if isinstance(storage, QueuedStorageBase) and id(storage) not in seen:
                seen.add(id(storage))
                yield storage
    for alias in queued_aliases():
        storage = storages[alias]
        if id(storage) not in seen:
            seen.add(id(storage))
            yield storage


@register(Tags.caches)
def check_cache(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    alias = settings.QUEUED_STORAGE_CACHE
    caches: dict[str, Any] = getattr(settings, "CACHES", {})
    if alias not in caches:
        return [
            Error(
                f"QUEUED_STORAGE_CACHE names the cache {alias!r}, which is not in "
                "CACHES.",
                hint="Add it to CACHES or set QUEUED_STORAGE_CACHE to an alias of "
                "a cache shared by web and worker processes (Redis, memcached).",
                id="queued_storage.E001",
            )
        ]
    backend = caches[alias].get("BACKEND", "")
    if backend in PROCESS_LOCAL_CACHES:
        return [
            Warning(
                f"The cache {alias!r} that holds file states ({backend}) is "
                "private to each process, so workers cannot tell web processes "
                "that a file was transferred.",
                hint="Use a shared cache (Redis, memcached, database) for "
                "QUEUED_STORAGE_CACHE.",
                id="queued_storage.W001",
            )
        ]
    return []


@register(Tags.database)
def check_ledger(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Any]:
    from .models import StoredFile

    if not settings.QUEUED_STORAGE_LEDGER or not databases:
        return []
    alias = router.db_for_write(StoredFile) or "default"
    if alias not in databases:
        return []
    try:
        with connections[alias].cursor() as cursor:
            tables = connections[alias].introspection.table_names(cursor)
    except DatabaseError:
        return []
    if StoredFile._meta.db_table not in tables:
        return [
            Warning(
                "The ledger table of queued_storage is missing.",
                hint="Run 'manage.py migrate queued_storage', or set "
                "QUEUED_STORAGE_LEDGER = False for cache-only state.",
                id="queued_storage.W002",
            )
        ]
    return []


@register()
def check_storages(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from django.core.exceptions import ImproperlyConfigured

    from .tasks import get_task

    errors: list[Any] = []
    seen: dict[str, Any] = {}
    for storage in queued_storages():
        other = seen.setdefault(storage.reference, storage)
        if other is not storage and other.deconstruct() != storage.deconstruct():
            errors.append(
                Error(
                    f"Two differently configured queued storages share the "
                    f"reference {storage.reference!r}, so workers cannot tell "
                    "them apart.",
                    hint="Give each its own reference= option.",
                    id="queued_storage.E007",
                )
            )
        label = f"{type(storage).__name__} {storage.reference!r}"
        for role in ("local", "remote"):
            try:
                getattr(storage, role)
            except ImproperlyConfigured as exc:
                errors.append(Error(f"{label}: {exc}", id="queued_storage.E002"))
        try:
            get_task(storage.task)
        except ImproperlyConfigured as exc:
            errors.append(Error(f"{label}: {exc}", id="queued_storage.E003"))
    return errors


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    retries = settings.QUEUED_STORAGE_RETRIES
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        errors.append(
            Error(
                f"QUEUED_STORAGE_RETRIES must be a whole number of 0 or more, "
                f"not {retries!r}; a transfer must not retry forever.",
                id="queued_storage.E004",
            )
        )
    for name in ("RETRY_DELAY", "RETRY_BACKOFF_MAX", "MESSAGE_MAX_AGE"):
        value = getattr(settings, f"QUEUED_STORAGE_{name}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            errors.append(
                Error(
                    f"QUEUED_STORAGE_{name} must be a positive number of seconds, "
                    f"not {value!r}.",
                    id="queued_storage.E005",
                )
            )
    if settings.QUEUED_STORAGE_NAME_CHECK not in ("remote", "state"):
        errors.append(
            Error(
                "QUEUED_STORAGE_NAME_CHECK must be 'remote' or 'state', not "
                f"{settings.QUEUED_STORAGE_NAME_CHECK!r}.",
                id="queued_storage.E006",
            )
        )
    if settings.QUEUED_STORAGE_OUTBOX and not settings.QUEUED_STORAGE_LEDGER:
        errors.append(
            Error(
                "QUEUED_STORAGE_OUTBOX needs the ledger, which holds the outbox: "
                "set QUEUED_STORAGE_LEDGER = True, or QUEUED_STORAGE_OUTBOX = False "
                "to send each message from save().",
                id="queued_storage.E008",
            )
        )
    return errors


@register()
def check_celery(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from celery import current_app

    accepted = {str(kind).lower() for kind in current_app.conf.accept_content or ()}
    if accepted & {"pickle", "application/x-python-serialize"}:
        return [
            Warning(
                "The Celery app accepts pickled messages, so anyone who can "
                "write to the broker can run code in the workers.",
                hint="Set CELERY_ACCEPT_CONTENT = ['json'] (accept_content) and "
                "a JSON task serializer.",
                id="queued_storage.W003",
            )
        ]
    return []


LOCAL_BROKERS = ("memory", "filesystem", "sqla+sqlite")


def _broker_is_local(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme in LOCAL_BROKERS:
        return True
    return (parts.hostname or "localhost") in ("localhost", "127.0.0.1", "::1")


@register()
def check_local_reachable(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from celery import current_app
    from django.core.files.storage import FileSystemStorage

    if settings.QUEUED_STORAGE_PER_HOST_QUEUE or settings.QUEUED_STORAGE_SHARED_LOCAL:
        return []
    broker = current_app.conf.broker_url or ""
    if _broker_is_local(broker):
        return []
    warnings = []
    for storage in queued_storages():
        try:
            local = storage.local
        except Exception:  # noqa: S112 - reported by check_storages.
            continue
        if isinstance(local, FileSystemStorage):
            warnings.append(
                Warning(
                    f"{type(storage).__name__} {storage.reference!r} keeps files "
                    "on this host's disk until they are transferred, and workers "
                    "on other hosts (the broker is not local) cannot read them.",
                    hint="Put the local storage on a volume every worker mounts "
                    "and set QUEUED_STORAGE_SHARED_LOCAL = True, or set "
                    "QUEUED_STORAGE_PER_HOST_QUEUE = True and run a worker per "
                    "host on its queue.",
                    id="queued_storage.W004",
                )
            )
    return warnings


@register()
def check_local_retention(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Report retention values that are not understood, or need the ledger."""
    from django.core.exceptions import ImproperlyConfigured

    messages: list[Any] = []
    for storage in queued_storages():
        label = f"{type(storage).__name__} {storage.reference!r}"
        try:
            period = storage.local_retention_period()
            cap = storage.local_max_bytes_limit()
        except ImproperlyConfigured as exc:
            messages.append(Error(f"{label}: {exc}", id="queued_storage.E040"))
            continue
        sweeps = cap is not None or (period is not None and period.total_seconds())
        if sweeps and not settings.QUEUED_STORAGE_LEDGER:
            messages.append(
                Warning(
                    f"{label} has a local retention period or size cap, which "
                    "the sweep applies from the ledger; QUEUED_STORAGE_LEDGER "
                    "is off, so no local copy is ever removed.",
                    hint="Turn the ledger on, or use local_retention=0.",
                    id="queued_storage.W040",
                )
            )
    return messages
