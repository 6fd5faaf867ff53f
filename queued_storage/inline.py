"""Run a transfer in the calling process, for scripts and tests.

The transfer goes through the storage's task exactly as a worker runs it
(the signed message is checked, the state machine takes the file's lease
and records the outcome), only without a broker. It makes one attempt: a
failure marks the file failed at once, as the last retry of a worker would,
so the caller sees the outcome instead of waiting for retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import message
from .state import FileState

if TYPE_CHECKING:
    from .backends import QueuedStorage


def run_transfer(storage: QueuedStorage, name: str, version: str) -> FileState | None:
    """Transfer *name* at *version* in this process; return its state after."""
    from .tasks import _one_attempt, get_task

    task = get_task(storage.task)
    kwargs = message.sign(task.name, storage.reference, name, version)
    # No retry is scheduled: a failure is final at once.
    token = _one_attempt.set(True)
    try:
        task.apply(kwargs=kwargs)
    finally:
        _one_attempt.reset(token)
    return storage.state.get(name)
