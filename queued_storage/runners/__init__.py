"""Runners: what carries a transfer message from a storage to a worker.

A runner sends the signed, path-free message of one file (see
:mod:`queued_storage.message`) to the task framework that runs the transfers.
Two ship with the package: ``"celery"`` (:mod:`.celery`, the default) and
``"django_tasks"`` (:mod:`.django_tasks`, Django's task framework). A storage
picks one with its ``runner`` option, else :setting:`QUEUED_STORAGE_RUNNER`
decides, read at each send. A runner's module is imported only when it is
used, so the storage, the state store and the transfer core import neither
framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ..conf import settings
from ..machine import Policy

if TYPE_CHECKING:
    from ..backends import QueuedStorage

#: The runners known by name, and the dotted paths of their classes.
RUNNERS: dict[str, str] = {
    "celery": "queued_storage.runners.celery.CeleryRunner",
    "django_tasks": "queued_storage.runners.django_tasks.DjangoTasksRunner",
}


class Runner(Protocol):
    """What a storage needs of a runner."""

    def send(
        self,
        queued: QueuedStorage,
        name: str,
        version: str,
        host: str | None,
        delay: float | None = None,
    ) -> Any:
        """Send the transfer message of *name* at *version*.

        *host* names the host holding the local copy (for per-host queues);
        *delay* asks for the message to run that many seconds from now.
        Return what the framework returned for the message, or ``None`` when
        it could not be sent (logged: the file stays pending for
        ``reconcile``). Never raise for an unreachable queue.
        """

    def run_inline(self, queued: QueuedStorage, name: str, version: str) -> None:
        """Run the task of *queued* for *name* at *version* in this process.

        What ``transfer(now=True)`` uses: the signed message goes to the
        task as a worker would receive it, without a queue. Optional: a
        runner without it has Celery's task run instead.
        """


def runner_path(name: str) -> str:
    """Return the dotted path of the runner class that *name* stands for.

    *name* is a key of :data:`RUNNERS` or a dotted path of a runner class.
    """
    if name in RUNNERS:
        return RUNNERS[name]
    if not isinstance(name, str) or "." not in name:
        known = ", ".join(repr(known) for known in RUNNERS)
        raise ImproperlyConfigured(
            f"Unknown queued_storage runner {name!r}: use one of {known} or the "
            "dotted path of a runner class (QUEUED_STORAGE_RUNNER or a "
            "storage's runner option)."
        )
    return name


def get_runner(name: str) -> Runner:
    """Return the runner that *name* (a key of :data:`RUNNERS` or a path) names.

    Raise :class:`~django.core.exceptions.ImproperlyConfigured` when it
    cannot be imported, for example because its framework is not installed.
    """
    path = runner_path(name)
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"The queued_storage runner {name!r} cannot be imported: {exc}. "
            "Install the package its framework needs "
            "(pip install 'django-queued-storage[tasks]' for django_tasks)."
        ) from exc
    except Exception as exc:  # The framework refused its configuration.
        raise ImproperlyConfigured(
            f"The queued_storage runner {name!r} cannot be loaded: "
            f"{type(exc).__name__}: {exc}."
        ) from exc
    return cls()


def settings_policy() -> Policy:
    """Return the retry and lease policy that the settings of now describe."""
    return Policy(
        retries=int(settings.QUEUED_STORAGE_RETRIES),
        max_deliveries=int(settings.QUEUED_STORAGE_MAX_DELIVERIES),
        retry_delay=float(settings.QUEUED_STORAGE_RETRY_DELAY),
        backoff_max=float(settings.QUEUED_STORAGE_RETRY_BACKOFF_MAX),
        lease=float(settings.QUEUED_STORAGE_LEASE),
        countdown_max=float(settings.QUEUED_STORAGE_RETRY_COUNTDOWN_MAX),
    )
