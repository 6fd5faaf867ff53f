"""System checks of the Celery broker's settings against long transfers.

A broker gives a message that stays unacknowledged past its window to
another worker (Redis: ``visibility_timeout``) or closes the consumer's
channel (RabbitMQ: ``consumer_timeout``, 30 minutes unless the node is told
otherwise). Transfers acknowledge their message when they start, so an upload
may take any time; what still waits unacknowledged is a retry sent with a
countdown and a message prefetched behind a busy worker. These checks flag
the settings under which those cannot work.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Warning, register

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
    countdown = _seconds(settings.QUEUED_STORAGE_RETRY_COUNTDOWN_MAX)
    max_age = _seconds(settings.QUEUED_STORAGE_MESSAGE_MAX_AGE)
    found: list[Any] = []
    if kind == "redis":
        window = options.get("visibility_timeout", REDIS_DEFAULT_VISIBILITY)
        if countdown is not None and countdown >= window:
            found.append(_countdown_warning("visibility_timeout", window, countdown))
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
        window = RABBITMQ_DEFAULT_CONSUMER_TIMEOUT
        if countdown is not None and countdown >= window:
            found.append(_countdown_warning("consumer_timeout", window, countdown))
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


def _seconds(value: Any) -> float | None:
    """Return *value* if it is a number of seconds; ``check_settings`` reports
    any other value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _countdown_warning(window_name: str, window: float, countdown: float) -> Any:
    return Warning(
        f"QUEUED_STORAGE_RETRY_COUNTDOWN_MAX ({countdown} s) is not shorter than "
        f"the broker's {window_name} ({window} s): a retry that waits that long "
        "in the broker is delivered again before it is due (Redis) or closes "
        "the worker's channel (RabbitMQ).",
        hint=f"Lower QUEUED_STORAGE_RETRY_COUNTDOWN_MAX below {window_name}; "
        "longer retries then wait in the ledger and are sent when due.",
        id="queued_storage.W020",
    )
