"""What 0.8's storages offered and 1.0 keeps for a while, with a warning.

Each name here warns with a ``DeprecationWarning`` that says what to use
instead; the upgrade notes of the documentation have the details.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from typing import Any

_results = threading.local()


def _last_results() -> weakref.WeakKeyDictionary[Any, Any]:
    found = getattr(_results, "by_storage", None)
    if found is None:
        found = _results.by_storage = weakref.WeakKeyDictionary()
    return found


def remember_result(storage: Any, result: Any) -> None:
    """Keep *result* as this thread's last transfer result of *storage*."""
    _last_results()[storage] = result


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in 2.0; {new}.",
        DeprecationWarning,
        stacklevel=3,
    )


class Deprecated08:
    """The attributes and methods of 0.8's ``QueuedStorage`` that 1.0 replaced."""

    _paths: dict[str, str]

    @property
    def result(self) -> Any:
        """Return the Celery result of this thread's last save, or ``None``.

        ``None`` when nothing was queued: a delayed storage, the outbox, a
        broker that could not be reached, or a transaction not yet committed.
        """
        _deprecated(
            "QueuedStorage.result",
            "storage.transfer(name) returns the result of the message it "
            "sends, and the file_queued and file_transferred signals say when "
            "a file was queued and moved",
        )
        return _last_results().get(self)

    @property
    def local_path(self) -> str:
        """Return the dotted path or ``STORAGES`` alias of the local storage."""
        _deprecated("QueuedStorage.local_path", "use type(storage.local)")
        return self._paths["local"]

    @property
    def remote_path(self) -> str:
        """Return the dotted path or ``STORAGES`` alias of the remote storage."""
        _deprecated("QueuedStorage.remote_path", "use type(storage.remote)")
        return self._paths["remote"]

    def accessed_time(self, name: str) -> Any:
        """Return :meth:`get_accessed_time` of *name*."""
        _deprecated("accessed_time()", "use get_accessed_time()")
        return self.get_accessed_time(name)  # type: ignore[attr-defined]

    def created_time(self, name: str) -> Any:
        """Return :meth:`get_created_time` of *name*."""
        _deprecated("created_time()", "use get_created_time()")
        return self.get_created_time(name)  # type: ignore[attr-defined]

    def modified_time(self, name: str) -> Any:
        """Return :meth:`get_modified_time` of *name*."""
        _deprecated("modified_time()", "use get_modified_time()")
        return self.get_modified_time(name)  # type: ignore[attr-defined]
