"""System checks that catch misconfigurations before they cost files.

Ids are never reused; see the settings reference for each.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import connections, router

PROCESS_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


def queued_storages(errors: list[Any] | None = None) -> Iterable[Any]:
    """Yield the queued storages of model fields and of ``STORAGES``.

    A ``STORAGES`` entry that cannot be built (an option the class does not
    know, say) is skipped; with *errors*, it is reported there as
    ``queued_storage.E002``.
    """
    from django.core.exceptions import ImproperlyConfigured
    from django.core.files.storage import storages

    from .base import QueuedStorageBase
    from .registry import queued_aliases

    seen: set[int] = set()
    for model in apps.get_models():
        for field in model._meta.get_fields():
            storage = _unwrapped(getattr(field, "storage", None))
            if isinstance(storage, QueuedStorageBase) and id(storage) not in seen:
                seen.add(id(storage))
                yield storage
    for alias in queued_aliases():
        try:
            storage = storages[alias]
        except (ImproperlyConfigured, TypeError, ValueError) as exc:
            if errors is not None:
                errors.append(
                    Error(
                        f"STORAGES[{alias!r}] cannot be built: {exc}",
                        hint="Fix or remove the option; the configuration page "
                        "lists the options a queued storage takes.",
                        id="queued_storage.E002",
                    )
                )
            continue
        if id(storage) not in seen:
            seen.add(id(storage))
            yield storage


def _unwrapped(storage: Any) -> Any:
    """Return the storage a ``LazyObject`` wraps, without building it.

    ``isinstance()`` on a lazy object builds what it wraps, which may be
    slow, fail, or be meant for later. One not built yet is passed over: the
    checks see a queued storage that a lazy object wraps once it is built.
    """
    from django.utils.functional import LazyObject, empty

    if not issubclass(type(storage), LazyObject):
        return storage
    wrapped = object.__getattribute__(storage, "_wrapped")
    return None if wrapped is empty else wrapped


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


#: Seconds the ledger check waits for the database before it gives up silently.
LEDGER_CHECK_TIMEOUT = 5.0


def running_command() -> str | None:
    """Return the name of the management command running these checks, if any."""
    from django.core.management.base import BaseCommand

    frame = sys._getframe(1)
    while frame is not None:
        command = frame.f_locals.get("self")
        if isinstance(command, BaseCommand):
            return type(command).__module__.rpartition(".")[2]
        frame = frame.f_back  # type: ignore[assignment]
    return None


@register()
def check_ledger(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Any]:
    """Report a missing ledger table (``queued_storage.W002``).

    Checks that name no database do not touch one, as Django's own do: this
    one looks when databases are named (``check --database``) and under plain
    ``manage.py check``, never while ``migrate`` runs (which creates it).
    """
    from .models import StoredFile

    if not settings.QUEUED_STORAGE_LEDGER:
        return []
    command = running_command()
    if command == "migrate" or (not databases and command != "check"):
        return []
    alias = router.db_for_write(StoredFile) or "default"
    if databases and alias not in databases:
        return []

    def table_names() -> list[str]:
        try:
            with connections[alias].cursor() as cursor:
                return list(connections[alias].introspection.table_names(cursor))
        finally:
            connections[alias].close()

    from .health import within

    try:
        # In a thread of its own, so that a database that does not answer
        # holds the check for seconds, not for the TCP timeout.
        tables = within(LEDGER_CHECK_TIMEOUT, table_names)
    except Exception:  # noqa: BLE001 - an unreachable database is not ours to report.
        return []
    if StoredFile._meta.db_table not in tables:
        return [
            Warning(
                "The ledger table of queued_storage is missing: saving a file "
                "would fail after writing its local copy.",
                hint="Run 'manage.py migrate queued_storage', or set "
                "QUEUED_STORAGE_LEDGER = False for cache-only state.",
                id="queued_storage.W002",
            )
        ]
    return []


@register()
def check_storages(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from django.core.exceptions import ImproperlyConfigured

    errors: list[Any] = []
    seen: dict[str, Any] = {}
    for storage in queued_storages(errors):
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
            _check_task(storage)
        except ImproperlyConfigured as exc:
            errors.append(Error(f"{label}: {exc}", id="queued_storage.E003"))
    return errors


def _check_task(storage: Any) -> None:
    """Raise ImproperlyConfigured if the runner of *storage* lacks its task.

    A runner that cannot be imported is reported by ``queued_storage.E050``.
    """
    runner = storage.runner_name()
    if runner == "celery":
        from .tasks import get_task

        get_task(storage.task)
    elif runner == "django_tasks":
        try:
            from .runners import django_tasks
        except ImportError:
            return
        django_tasks.get_task(django_tasks.task_path(storage))


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
    for name in (
        "RETRY_DELAY", "RETRY_BACKOFF_MAX", "MESSAGE_MAX_AGE", "LEASE",
        "RECONCILE_AGE",
    ):  # fmt: skip
        value = getattr(settings, f"QUEUED_STORAGE_{name}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            errors.append(
                Error(
                    f"QUEUED_STORAGE_{name} must be a positive number of seconds, "
                    f"not {value!r}.",
                    id="queued_storage.E005",
                )
            )
    lease = settings.QUEUED_STORAGE_LEASE
    number = isinstance(lease, (int, float)) and not isinstance(lease, bool)
    if number and 0 < lease < 1:
        errors.append(
            Warning(
                f"QUEUED_STORAGE_LEASE is {lease} s: a worker that pauses that "
                "long (a slow database, a busy host) or whose clock is that far "
                "from another host's loses its lease while it uploads, and a "
                "second worker uploads the same file at once.",
                hint="Set QUEUED_STORAGE_LEASE to a second or more (default 60).",
                id="queued_storage.W027",
            )
        )
    countdown = settings.QUEUED_STORAGE_RETRY_COUNTDOWN_MAX
    if (
        not isinstance(countdown, (int, float))
        or isinstance(countdown, bool)
        or countdown < 0
    ):
        errors.append(
            Error(
                "QUEUED_STORAGE_RETRY_COUNTDOWN_MAX must be a number of seconds, "
                f"0 or more, not {countdown!r}.",
                id="queued_storage.E020",
            )
        )
    if settings.QUEUED_STORAGE_NAME_CHECK not in (None, "remote", "state"):
        errors.append(
            Error(
                "QUEUED_STORAGE_NAME_CHECK must be 'remote', 'state' or None (the "
                "default: 'state' with the ledger, 'remote' without), not "
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
    if settings.QUEUED_STORAGE_OUTBOX not in (None, True, False):
        errors.append(
            Error(
                "QUEUED_STORAGE_OUTBOX must be None (the outbox with the ledger "
                "and the Celery runner), True or False, not "
                f"{settings.QUEUED_STORAGE_OUTBOX!r}.",
                id="queued_storage.E060",
            )
        )
    interval = settings.QUEUED_STORAGE_DISPATCH_INTERVAL
    if (
        isinstance(interval, bool)
        or not isinstance(interval, (int, float))
        or not 0 < interval <= 60
    ):
        errors.append(
            Error(
                "QUEUED_STORAGE_DISPATCH_INTERVAL must be a number of seconds "
                f"above 0 and at most 60, not {interval!r}.",
                id="queued_storage.E061",
            )
        )
    files = settings.QUEUED_STORAGE_DISPATCH_FILES
    if isinstance(files, bool) or not isinstance(files, int) or not 1 <= files <= 100:
        errors.append(
            Error(
                "QUEUED_STORAGE_DISPATCH_FILES must be a whole number from 1 to "
                f"100 (files in one message), not {files!r}.",
                id="queued_storage.E062",
            )
        )
    return errors


@register()
def check_celery(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    try:
        from celery import current_app
    except ImportError:  # Celery is not installed: nothing to check.
        return []

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
    try:
        from celery import current_app
    except ImportError:  # Celery is not installed: nothing to check.
        return []
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
                    hint="If every worker runs on this host, or the local "
                    "storage is on a volume every worker mounts, set "
                    "QUEUED_STORAGE_SHARED_LOCAL = True; otherwise set "
                    "QUEUED_STORAGE_PER_HOST_QUEUE = True and run a worker per "
                    "host on its queue.",
                    id="queued_storage.W004",
                )
            )
    return warnings


#: Cache backends that cannot unpickle what another party wrote: each process
#: keeps its own (pickled, but only it writes there) or keeps nothing.
_NO_FOREIGN_PICKLES = PROCESS_LOCAL_CACHES
_REDIS = "django.core.cache.backends.redis.RedisCache"
_PYMEMCACHE = "django.core.cache.backends.memcached.PyMemcacheCache"


def _safe_option(value: Any, kind: type) -> bool:
    """Return whether *value*, a cache option, is (or names) a *kind*."""
    from django.utils.module_loading import import_string

    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError:
            return False
    if isinstance(value, type):
        return issubclass(value, kind)
    return isinstance(value, kind)


def state_cache_unpickles(params: dict[str, Any]) -> bool:
    """Return whether the cache configured by *params* may unpickle its data.

    Decided from the configuration alone; nothing is connected to.
    """
    from .serializers import JSONSerde, JSONSerializer

    backend = params.get("BACKEND", "")
    options = params.get("OPTIONS") or {}
    if backend in _NO_FOREIGN_PICKLES:
        return False
    if backend == _REDIS:
        return not _safe_option(options.get("serializer"), JSONSerializer)
    if backend == _PYMEMCACHE:
        return not _safe_option(options.get("serde"), JSONSerde)
    # The file, database and pylibmc caches always pickle; a backend not
    # known here is assumed to.
    return True


@register(Tags.caches, Tags.security)
def check_cache_serializer(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    alias = settings.QUEUED_STORAGE_CACHE
    params = getattr(settings, "CACHES", {}).get(alias)
    if params is None or not state_cache_unpickles(params):
        return []
    backend = params.get("BACKEND", "")
    return [
        Warning(
            f"The cache {alias!r} that holds file states ({backend}) unpickles "
            "what it reads, so anyone who can write to it can run code in web "
            "processes and workers.",
            hint='Use Redis with "OPTIONS": {"serializer": '
            '"queued_storage.serializers.JSONSerializer"}, or PyMemcacheCache '
            'with "OPTIONS": {"serde": queued_storage.serializers.json_serde}, '
            "as a cache alias of its own for QUEUED_STORAGE_CACHE.",
            id="queued_storage.W010",
        )
    ]


def longest_retry_delay() -> float | None:
    """Return the longest countdown before a retry, or ``None`` if unknown.

    Retry number *n* (from 0) waits at most ``RETRY_DELAY * 2**n`` seconds,
    capped at ``RETRY_BACKOFF_MAX``; the message it sends is signed when the
    retry is scheduled, so it is that old when it arrives.
    """
    retries = settings.QUEUED_STORAGE_RETRIES
    delay = settings.QUEUED_STORAGE_RETRY_DELAY
    cap = settings.QUEUED_STORAGE_RETRY_BACKOFF_MAX
    numbers = (retries, delay, cap)
    if not all(
        isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers
    ):
        return None  # Reported by check_settings.
    if retries < 1:
        return 0.0
    return float(min(cap, delay * 2 ** min(int(retries) - 1, 64)))


@register()
def check_message_max_age(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    max_age = settings.QUEUED_STORAGE_MESSAGE_MAX_AGE
    longest = longest_retry_delay()
    if (
        longest is None
        or not isinstance(max_age, (int, float))
        or isinstance(max_age, bool)
        or max_age > longest
    ):
        return []
    return [
        Warning(
            f"QUEUED_STORAGE_MESSAGE_MAX_AGE ({max_age!r} s) is not longer than "
            f"the longest delay before a retry ({longest:g} s), so a worker "
            "refuses a retried transfer message as expired.",
            hint="Raise QUEUED_STORAGE_MESSAGE_MAX_AGE, or lower "
            "QUEUED_STORAGE_RETRY_BACKOFF_MAX or QUEUED_STORAGE_RETRY_DELAY.",
            id="queued_storage.W011",
        )
    ]


#: The client library each cache backend imports when first used.
CACHE_CLIENTS = {
    "django.core.cache.backends.redis.RedisCache": "redis",
    "django.core.cache.backends.memcached.PyMemcacheCache": "pymemcache",
    "django.core.cache.backends.memcached.PyLibMCCache": "pylibmc",
}
#: The client library a broker transport needs beyond its own module.
BROKER_CLIENTS = {
    "redis": "redis",
    "rediss": "redis",
    "sentinel": "redis",
    "sqs": "boto3",
}


def _importable(module: str) -> str | None:
    """Return why *module* cannot be imported, or ``None`` when it can."""
    from importlib import import_module

    try:
        import_module(module)
    except ImportError as exc:
        return str(exc)
    return None


@register(Tags.caches)
def check_cache_client(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Report a state cache whose client library is not installed."""
    alias = settings.QUEUED_STORAGE_CACHE
    backend = getattr(settings, "CACHES", {}).get(alias, {}).get("BACKEND", "")
    client = CACHE_CLIENTS.get(backend)
    problem = client and _importable(client)
    if not problem:
        return []
    return [
        Error(
            f"The cache {alias!r} that holds file states ({backend}) needs the "
            f"{client!r} package, which cannot be imported: {problem}.",
            hint=f"pip install {client} (the 'redis' extra of "
            "django-queued-storage brings the Redis client).",
            id="queued_storage.E030",
        )
    ]


@register()
def check_broker_transport(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Report a broker whose Celery transport cannot be loaded."""
    from urllib.parse import urlsplit

    try:
        from celery import current_app
    except ImportError:  # Celery is not installed: nothing to check.
        return []
    from kombu.transport import resolve_transport

    url = current_app.conf.broker_url or ""
    scheme = urlsplit(url).scheme.split("+")[0]
    if not scheme:
        return []
    problem: str | None = None
    try:
        resolve_transport(scheme)  # Imports the transport's module.
    except ImportError as exc:
        problem = str(exc)
    except (KeyError, ValueError) as exc:
        problem = f"unknown transport: {exc}"
    client = BROKER_CLIENTS.get(scheme)
    problem = problem or (client and _importable(client)) or None
    if not problem:
        return []
    return [
        Error(
            f"Celery cannot load the {scheme!r} transport of the broker "
            f"(CELERY_BROKER_URL): {problem}. Workers cannot start and save() "
            "cannot queue transfers.",
            hint="For Redis: pip install 'django-queued-storage[redis]' (it "
            "brings celery[redis]); for another broker, Celery's extra for it.",
            id="queued_storage.E031",
        )
    ]


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
