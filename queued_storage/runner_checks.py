"""System checks of the runners that storages use.

Ids ``queued_storage.E05x`` and ``W05x``; never reused.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from .conf import settings

IMMEDIATE = "ImmediateBackend"
DUMMY = "DummyBackend"


def _runner_names() -> set[str]:
    """Return the names of the runners in use: the setting's and the storages'."""
    from .checks import queued_storages

    names = {str(settings.QUEUED_STORAGE_RUNNER)}
    names.update(
        storage.runner for storage in queued_storages() if storage.runner is not None
    )
    return names


def _in_tests() -> bool:
    """Return whether Django's test environment is set up (``mail.outbox``)."""
    from django.core import mail

    return hasattr(mail, "outbox")


@register()
def check_runners(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from .runners import get_runner

    errors: list[Any] = []
    for name in sorted(_runner_names()):
        try:
            get_runner(name)
        except ImproperlyConfigured as exc:
            errors.append(
                Error(
                    str(exc),
                    hint="Set QUEUED_STORAGE_RUNNER (or the storage's runner "
                    "option) to 'celery' or 'django_tasks', and install what it "
                    "needs.",
                    id="queued_storage.E050",
                )
            )
            continue
        if name == "django_tasks":
            errors += _check_tasks_backend()
    return errors


def _check_tasks_backend() -> list[Any]:
    from .enqueue import this_host, transfer_queue
    from .runners.django_tasks import DEFAULT_TASK_QUEUE_NAME, DjangoTasksRunner

    runner = DjangoTasksRunner()
    alias = runner.alias()
    try:
        backend = runner.backend()
    except Exception as exc:
        return [
            Error(
                f"The django_tasks runner uses TASKS[{alias!r}], which cannot be "
                f"built: {exc}",
                hint="Add the backend to the TASKS setting or set "
                "QUEUED_STORAGE_TASKS_BACKEND to an alias it has.",
                id="queued_storage.E051",
            )
        ]
    found: list[Any] = []
    kind = type(backend).__name__
    if kind == IMMEDIATE:
        found.append(
            Warning(
                f"TASKS[{alias!r}] is an ImmediateBackend: every transfer runs "
                "inside the request that saved the file, which waits for the "
                "upload.",
                hint="Use a backend with workers (django-tasks-db's "
                "DatabaseBackend and its db_worker) outside development.",
                id="queued_storage.W050",
            )
        )
    if kind == DUMMY and not _in_tests():
        found.append(
            Warning(
                f"TASKS[{alias!r}] is a DummyBackend: it runs no task, so every "
                "file stays pending and served locally.",
                hint="Use the DummyBackend in tests only.",
                id="queued_storage.W051",
            )
        )
    queue = transfer_queue(this_host()) or DEFAULT_TASK_QUEUE_NAME
    queues = getattr(backend, "queues", None)
    if queues and queue not in queues:
        found.append(
            Error(
                f"TASKS[{alias!r}]['QUEUES'] does not admit the queue {queue!r} "
                "that transfers go to, so no transfer can be queued.",
                hint=f"Add {queue!r} to QUEUES (with per-host queues, the queue "
                "of every host, or an empty list to admit any queue).",
                id="queued_storage.E052",
            )
        )
    if not getattr(backend, "supports_defer", False) and kind != DUMMY:
        found.append(
            Warning(
                f"TASKS[{alias!r}] cannot defer tasks (run_after), so a failed "
                "transfer is retried only when the dispatcher or reconcile "
                "sends it again.",
                hint="Run 'manage.py queued_storage reconcile' periodically (or "
                "the dispatcher), or use a backend that supports deferral. "
                "Without the ledger (QUEUED_STORAGE_LEDGER), such retries are "
                "not kept anywhere: the file stays pending until transfer() "
                "is called.",
                id="queued_storage.W052",
            )
        )
    return found
