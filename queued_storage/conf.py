"""Settings of queued_storage, with their defaults.

Every setting is read from ``django.conf.settings`` when it is needed, never
at import, so ``override_settings`` works and a worker and a web process can
differ where it makes sense.
"""

from __future__ import annotations

from appconf import AppConf
from django.conf import settings

__all__ = ["QueuedStorageConf", "settings"]


class QueuedStorageConf(AppConf):
    #: Prefix of the cache keys that hold file states.
    CACHE_PREFIX = "queued_storage"
    #: Alias in ``CACHES`` of the cache that holds file states.
    CACHE = "default"
    #: Seconds a state entry lives in the cache; ``None`` keeps it for good.
    CACHE_TIMEOUT = None
    #: How often a failed transfer is retried before it is marked failed.
    RETRIES = 5
    #: Seconds before the first retry; later ones back off exponentially.
    RETRY_DELAY = 60
    #: Upper bound, in seconds, of the delay between two retries.
    RETRY_BACKOFF_MAX = 3600
    #: Keep a durable record of every file in the database.
    LEDGER = True
    #: Seconds for which a signed task message is accepted by a worker.
    MESSAGE_MAX_AGE = 7 * 24 * 3600
    #: Celery queue the transfer tasks are sent to; ``None`` is Celery's default.
    QUEUE = None
    #: Send each transfer to a queue named after the host that wrote the file.
    PER_HOST_QUEUE = False
    #: Declare that every worker sees the local storage (a shared volume).
    SHARED_LOCAL = False
    #: How ``get_available_name`` decides that a name is free on the remote:
    #: ``"remote"`` asks the remote storage, ``"state"`` trusts the recorded
    #: states and lets the transfer catch the rare collision. ``None`` (the
    #: default) is ``"state"`` with the ledger, ``"remote"`` without.
    NAME_CHECK = None
    #: How many times a message may be delivered again after a worker was lost
    #: before the transfer is marked failed.
    MAX_DELIVERIES = 5
    #: Leave the transfer message of a save to the dispatcher instead of
    #: sending it from ``save()``: the ledger row is the message. ``None``
    #: (the default) does so whenever the ledger is on and the storage's
    #: runner is Celery, whose worker nodes run the dispatcher; ``True`` for
    #: every runner (needs the ledger), ``False`` sends from ``save()``.
    OUTBOX = None
    #: Run the dispatcher in a thread of every Celery worker node.
    WORKER_DISPATCH = True
    #: Seconds the dispatcher of a worker node waits before it looks at an
    #: empty outbox again.
    DISPATCH_INTERVAL = 0.2
    #: Most small files (1 MiB or less) one message of the dispatcher
    #: carries; a worker process transfers them one after another. ``1``
    #: sends a message per file.
    DISPATCH_FILES = 10
    #: Seconds a worker's lease of a file lasts unless renewed; the worker
    #: renews it every third of that while the upload runs.
    LEASE = 60
    #: Longest retry delay, in seconds, sent to the broker as a countdown;
    #: longer delays wait in the ledger and are sent when due.
    RETRY_COUNTDOWN_MAX = 300
    #: Seconds a pending file may wait for its message before ``reconcile``
    #: counts the message as lost and sends it again.
    RECONCILE_AGE = 300
    #: How long the local copy of a transferred file is kept: ``None`` keeps
    #: it, ``0`` removes it at once, seconds or a ``timedelta`` leave it to
    #: the sweep. A storage's ``local_retention`` option takes precedence.
    LOCAL_RETENTION = None
    #: Bytes of local copies above which the sweep removes the copies
    #: transferred longest ago; ``None`` sets no cap (``local_max_bytes``).
    LOCAL_MAX_BYTES = None

    #: The runner that carries transfer messages: ``"celery"``,
    #: ``"django_tasks"`` or the dotted path of a runner class.
    RUNNER = "celery"
    #: Alias in ``TASKS`` of the backend the ``django_tasks`` runner uses.
    TASKS_BACKEND = "default"

    class Meta:
        prefix = "queued_storage"
