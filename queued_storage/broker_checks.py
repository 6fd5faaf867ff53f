"""System checks of the Celery broker's settings against long transfers.

A broker gives a message that stays unacknowledged past its window to
another worker (Redis: ``visibility_timeout``) or closes the consumer's
channel (RabbitMQ: ``consumer_timeout``, 30 minutes unless the node is told
otherwise). Transfers acknowledge their message when they start, so an upload
may take any time; what still waits unacknowledged is a retry sent with a
countdown and a message prefetched behind a busy worker. These checks flag
the settings under which those cannot work, and the RabbitMQ queue arguments
of the transfer queues (``task_queues``) that drop or cut messages.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Warning, register

REDIS_SCHEMES = ("redis", "rediss", "sentinel", "redis+socket")
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
#: kombu's default ``visibility_timeout`` for Redis, in seconds.
REDIS_DEFAULT_VISIBILITY = 3600
#: RabbitMQ's default ``consumer_timeout``, in seconds.
RABBITMQ_DEFAULT_CONSUMER_TIMEOUT = 1800


def broker_kind(url: str) -> str:
    """Return ``"redis"``, ``"amqp"`` or ``""`` for a Celery broker URL."""
    scheme = urlsplit(url.split(";")[0]).scheme
    if scheme in REDIS_SCHEMES:
        return "redis"
    if scheme in AMQP_SCHEMES:
        return "amqp"
    return ""


@register()
def check_broker_windows(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    try:
        from celery import current_app
    except ImportError:  # Celery is not installed: nothing to check.
        return []

    conf = current_app.conf
    kind = broker_kind(str(conf.broker_url or ""))
    options = conf.broker_transport_options or {}
    # Without the ledger every retry, however long, waits in the broker.
    limit = "RETRY_COUNTDOWN_MAX" if settings.QUEUED_STORAGE_LEDGER else (
        "RETRY_BACKOFF_MAX"
    )  # fmt: skip
    countdown = _seconds(getattr(settings, f"QUEUED_STORAGE_{limit}"))
    max_age = _seconds(settings.QUEUED_STORAGE_MESSAGE_MAX_AGE)
    found: list[Any] = []
    if kind == "redis":
        given = options.get("visibility_timeout", REDIS_DEFAULT_VISIBILITY)
        window = _seconds(given)
        if window is None:
            return [
                Error(
                    f"The Redis broker's visibility_timeout must be a number of "
                    f"seconds, not {given!r}: kombu cannot give back the messages "
                    "of a lost worker.",
                    hint="Set visibility_timeout in CELERY_BROKER_TRANSPORT_OPTIONS "
                    "to a number of seconds, or remove it.",
                    id="queued_storage.E021",
                )
            ]
        if countdown is not None and countdown >= window:
            found.append(
                _countdown_warning(limit, "visibility_timeout", window, countdown)
            )
        if max_age is not None and max_age < window:
            found.append(
                Warning(
                    f"QUEUED_STORAGE_MESSAGE_MAX_AGE "
                    f"({settings.QUEUED_STORAGE_MESSAGE_MAX_AGE} s) is shorter than "
                    f"the Redis broker's visibility_timeout ({window} s), so a "
                    "message Redis gives back after a lost worker is refused as "
                    "too old, and its file waits for reconcile.",
                    hint="Raise QUEUED_STORAGE_MESSAGE_MAX_AGE above "
                    "visibility_timeout in CELERY_BROKER_TRANSPORT_OPTIONS.",
                    id="queued_storage.W021",
                )
            )
    elif kind == "amqp":
        queues = transfer_queues(conf)
        window, window_name = _consumer_timeout(queues)
        if countdown is not None and countdown >= window:
            found.append(_countdown_warning(limit, window_name, window, countdown))
        found.extend(_quorum_warnings(queues))
        if not options.get("confirm_publish"):
            found.append(
                Warning(
                    "The RabbitMQ broker does not confirm publishes, so a transfer "
                    "message the broker drops is taken as sent, and its file waits "
                    "for reconcile.",
                    hint="Set CELERY_BROKER_TRANSPORT_OPTIONS = "
                    "{'confirm_publish': True}.",
                    id="queued_storage.W022",
                )
            )
        if not conf.broker_channel_error_retry:
            found.append(
                Warning(
                    "A channel that RabbitMQ closes (consumer_timeout, a message "
                    "prefetched behind a long upload) stops the Celery worker.",
                    hint="Set CELERY_BROKER_CHANNEL_ERROR_RETRY = True.",
                    id="queued_storage.W023",
                )
            )
    if kind and (conf.worker_prefetch_multiplier or 0) > 1:
        found.append(
            Warning(
                f"CELERY_WORKER_PREFETCH_MULTIPLIER is "
                f"{conf.worker_prefetch_multiplier}: a worker busy with a long "
                "upload holds that many more messages unacknowledged, which the "
                "broker gives to another worker (Redis) or ends the channel for "
                "(RabbitMQ) once its window passes.",
                hint="Set CELERY_WORKER_PREFETCH_MULTIPLIER = 1.",
                id="queued_storage.W024",
            )
        )
    return found


def transfer_queues(conf: Any) -> list[tuple[str, dict[str, Any]]]:
    """Return the transfer queues of the Celery app as (name, arguments) pairs.

    The queues are those of ``task_queues`` that transfers go to
    (:setting:`QUEUED_STORAGE_QUEUE`, the per-host queues, or the app's
    default queue), with their RabbitMQ arguments; a transfer queue that
    ``task_queues`` does not declare is declared as Celery's default queue
    type says.
    """
    name = settings.QUEUED_STORAGE_QUEUE or conf.task_default_queue or "celery"
    per_host = bool(settings.QUEUED_STORAGE_PER_HOST_QUEUE)
    prefix = f"{settings.QUEUED_STORAGE_QUEUE or 'queued_storage'}."

    def ours(queue_name: str) -> bool:
        return queue_name.startswith(prefix) if per_host else queue_name == name

    declared: list[tuple[str, dict[str, Any]]] = []
    queues = conf.task_queues or []
    items = queues.items() if isinstance(queues, dict) else [(None, q) for q in queues]
    for key, queue in items:
        if isinstance(queue, dict):
            queue_name, arguments = key, queue.get("queue_arguments")
        else:
            queue_name = getattr(queue, "name", key)
            arguments = getattr(queue, "queue_arguments", None)
        if isinstance(queue_name, str) and ours(queue_name):
            declared.append((queue_name, dict(arguments or {})))
    if not declared and not per_host:
        default: dict[str, Any] = {}
        if conf.get("task_default_queue_type") == "quorum":
            default = {"x-queue-type": "quorum"}
        declared.append((name, default))
    return declared


def _consumer_timeout(queues: list[tuple[str, dict[str, Any]]]) -> tuple[float, str]:
    """Return the shortest ``consumer_timeout`` the transfer queues are known
    to have, in seconds, and how to name it."""
    known = [
        (float(args["x-consumer-timeout"]) / 1000, name)
        for name, args in queues
        if _seconds(args.get("x-consumer-timeout")) is not None
    ]
    if not known:
        return RABBITMQ_DEFAULT_CONSUMER_TIMEOUT, "consumer_timeout"
    seconds, name = min(known)
    return seconds, f"x-consumer-timeout of queue {name!r}"


def _quorum_warnings(queues: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Flag quorum transfer queues that drop a message before the retries of
    its file have run out, or that drop one without dead-lettering it."""
    found: list[Any] = []
    attempts = settings.QUEUED_STORAGE_RETRIES
    for name, args in queues:
        if args.get("x-queue-type") != "quorum":
            continue
        limit = _seconds(args.get("x-delivery-limit"))
        if limit is not None and isinstance(attempts, int) and limit < attempts + 1:
            found.append(
                Warning(
                    f"The quorum queue {name!r} drops a message after {limit:g} "
                    f"deliveries (x-delivery-limit), fewer than the "
                    f"{attempts + 1} attempts QUEUED_STORAGE_RETRIES allows a "
                    "file: a message handed back by a worker that died or lost "
                    "its channel is dropped, and its file waits for reconcile.",
                    hint=f"Raise x-delivery-limit of {name!r} to "
                    f"{attempts + 1} or more, or remove it.",
                    id="queued_storage.W025",
                )
            )
        if not args.get("x-dead-letter-exchange"):
            found.append(
                Warning(
                    f"The quorum queue {name!r} has no dead-letter exchange: a "
                    "message it drops at its delivery limit vanishes without a "
                    "trace, and its file waits for reconcile.",
                    hint=f"Give {name!r} an x-dead-letter-exchange argument in "
                    "CELERY_TASK_QUEUES, and schedule the reconcile task.",
                    id="queued_storage.W026",
                )
            )
    return found


def _seconds(value: Any) -> float | None:
    """Return *value* if it is a number of seconds; ``check_settings`` reports
    any other value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _countdown_warning(
    limit: str, window_name: str, window: float, countdown: float
) -> Any:
    if limit == "RETRY_COUNTDOWN_MAX":
        hint = (
            f"Lower QUEUED_STORAGE_RETRY_COUNTDOWN_MAX below {window_name}; "
            "longer retries then wait in the ledger and are sent when due."
        )
    else:
        hint = (
            f"Without the ledger every retry waits in the broker: lower "
            f"QUEUED_STORAGE_RETRY_BACKOFF_MAX below {window_name}, or set "
            "QUEUED_STORAGE_LEDGER = True."
        )
    return Warning(
        f"QUEUED_STORAGE_{limit} ({countdown} s) is not shorter than "
        f"the broker's {window_name} ({window} s): a retry that waits that long "
        "in the broker is delivered again before it is due (Redis) or closes "
        "the worker's channel (RabbitMQ).",
        hint=hint,
        id="queued_storage.W020",
    )
