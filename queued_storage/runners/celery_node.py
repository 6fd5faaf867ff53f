"""The dispatcher inside every Celery worker node.

A save leaves its transfer message in the outbox (see :mod:`..dispatch`); the
worker nodes send it, so no process of its own needs deploying. Each node runs
one dispatcher thread in its main process, started by a bootstep after the
pool (prefork children are forked before it runs) and stopped when the node
shuts down, warm or cold. Several nodes sharing one ledger is safe: each row
is claimed by one ``UPDATE``, which only one of them wins.

:func:`install` connects the bootstep to every Celery app whose worker starts
after ``queued_storage.tasks`` is imported (which the worker does, since it
runs the transfer tasks). :setting:`QUEUED_STORAGE_WORKER_DISPATCH` turns the
thread's passes off, read before each; :setting:`QUEUED_STORAGE_DISPATCH_INTERVAL`
is how long it waits when the outbox is empty.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps
from celery.signals import worker_init
from django.db import close_old_connections, connections

from .. import dispatch
from ..conf import settings

logger = logging.getLogger("queued_storage")

#: Seconds a stopping node waits for its dispatcher to end its pass.
STOP_TIMEOUT = 10.0
#: Rows one pass claims at most; a full pass is followed by another at once.
BATCH = 100


class DispatcherThread(threading.Thread):
    """Send the outbox's messages until stopped, from one worker node."""

    def __init__(self, app: Any) -> None:
        super().__init__(name="queued_storage-dispatcher", daemon=True)
        self.app = app
        self.stopping = threading.Event()
        self.sent = 0
        self.failing = False

    def run(self) -> None:
        # Celery's current app is per thread: this one sends with the node's.
        self.app.set_current()
        try:
            while not self.stopping.is_set():
                try:
                    sent = self.one_pass()
                finally:
                    # As after a request: a connection past CONN_MAX_AGE (at
                    # once by default) or broken is closed. An open one would
                    # be inherited by every pool process forked later.
                    _quietly(close_old_connections)
                if sent < BATCH:
                    self.stopping.wait(_interval())
        finally:
            _quietly(connections.close_all)

    def one_pass(self) -> int:
        """Dispatch one batch; return how many messages it sent."""
        if not settings.QUEUED_STORAGE_WORKER_DISPATCH:
            return 0
        try:
            sent = len(dispatch.dispatch(BATCH, stop=self.off))
        except Exception as exc:
            # Logged once until a pass succeeds: a database that is down
            # would otherwise fill the log several times a second.
            if not self.failing:
                logger.warning(
                    "The worker's outbox dispatcher cannot read the ledger "
                    "(%s: %s); it keeps trying.", type(exc).__name__, exc,
                )  # fmt: skip
            self.failing = True
            return 0
        if self.failing:
            logger.info("The worker's outbox dispatcher reads the ledger again.")
        self.failing = False
        self.sent += sent
        return sent

    def off(self) -> bool:
        """Return whether the pass under way is to end: stopping, or turned off.

        A pass that took its rows as the setting was turned off puts them
        back rather than send them.
        """
        return self.stopping.is_set() or not settings.QUEUED_STORAGE_WORKER_DISPATCH

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the thread to stop after the row it sends; wait up to *timeout*."""
        self.stopping.set()
        if self.is_alive():
            self.join(timeout)


class Dispatcher(bootsteps.StartStopStep):
    """The bootstep that runs a :class:`DispatcherThread` in a worker node."""

    label = "queued_storage dispatcher"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.thread: DispatcherThread | None = None

    def start(self, parent: Any) -> None:
        self.thread = DispatcherThread(parent.app)
        self.thread.start()
        logger.info("The outbox dispatcher runs in this worker node.")

    def stop(self, parent: Any) -> None:
        thread, self.thread = self.thread, None
        if thread is None:
            return
        thread.stop()
        if thread.is_alive():
            logger.warning(
                "The outbox dispatcher did not stop within %g s; a message it "
                "claimed but did not send is sent again by reconcile.",
                STOP_TIMEOUT,
            )
        else:
            logger.info("The outbox dispatcher stopped; it queued %d.", thread.sent)

    terminate = stop


def _quietly(close: Any) -> None:
    """Call *close*; a database already gone (the node stops) is no error."""
    try:
        close()
    except Exception as exc:
        logger.debug("Closing the dispatcher's connections: %s", exc)


def _interval() -> float:
    try:
        return max(0.01, float(settings.QUEUED_STORAGE_DISPATCH_INTERVAL))
    except (TypeError, ValueError):  # Reported by check queued_storage.E061.
        return 0.2


def _add_step(sender: Any = None, **kwargs: Any) -> None:
    """Give the starting worker node the dispatcher bootstep."""
    steps = sender.app.steps["worker"]
    if Dispatcher not in steps:
        steps.add(Dispatcher)


def install() -> None:
    """Run the dispatcher in every worker node that starts from now on."""
    worker_init.connect(_add_step, weak=False, dispatch_uid="queued_storage")
