"""Run a transfer in the calling process, for scripts and tests.

The transfer goes through the storage's task exactly as a worker runs it
(the signed message is checked, the state machine takes the file's lease
and records the outcome), only without a broker or a task backend: the
storage's runner runs its task here. It makes one attempt: a failure marks
the file failed at once, as the last retry of a worker would, so the caller
sees the outcome instead of waiting for retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .handlers import one_attempt
from .runners import get_runner
from .state import FileState

if TYPE_CHECKING:
    from .backends import QueuedStorage


def run_transfer(storage: QueuedStorage, name: str, version: str) -> FileState | None:
    """Transfer *name* at *version* in this process; return its state after."""
    runner = storage.get_runner()
    if not hasattr(runner, "run_inline"):
        # A runner of the project's own that cannot run a task in this
        # process: the Celery task of the storage's task option does it.
        runner = get_runner("celery")
    # No retry is scheduled: a failure is final at once.
    token = one_attempt.set(True)
    try:
        runner.run_inline(storage, name, version)
    finally:
        one_attempt.reset(token)
    return storage.state.get(name)
