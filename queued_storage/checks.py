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
    caches = getattr(settings, "CACHES", {})
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
def check_ledger(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
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
    for storage in queued_storages():
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
