"""A queued storage that Django's tests can build as a ``FileSystemStorage``.

It takes ``FileSystemStorage``'s arguments, uses them for its local storage,
and keeps its remote storage, another ``FileSystemStorage``, in a folder of
its own derived from the local one, so that two instances on one folder
share their remote too. Attributes that only a ``FileSystemStorage`` has
(``location``, ``base_url``...) are read from the local storage.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from queued_storage.backends import QueuedStorage
from queued_storage.tasks import Transfer

#: The real class, under a path that the runner does not replace.
REAL = "django.core.files.storage.filesystem.FileSystemStorage"


def remote_location(location: Any) -> str:
    base = os.environ["QS_DJANGO_SUITE_REMOTES"]
    digest = hashlib.sha256(os.fsencode(str(location))).hexdigest()[:16]
    return os.path.join(base, digest)


class QueuedAsFileSystem(QueuedStorage):
    """Save to the given folder, and move files to a folder of its own."""

    def __init__(
        self,
        location: Any = None,
        base_url: str | None = None,
        file_permissions_mode: int | None = None,
        directory_permissions_mode: int | None = None,
        allow_overwrite: bool = False,
    ) -> None:
        options: dict[str, Any] = {
            "location": location,
            "base_url": base_url,
            "file_permissions_mode": file_permissions_mode,
            "directory_permissions_mode": directory_permissions_mode,
        }
        options = {key: value for key, value in options.items() if value is not None}
        if allow_overwrite:
            options["allow_overwrite"] = True
        remote = {**options, "location": remote_location(location)}
        super().__init__(
            local=REAL, remote=REAL, local_options=options, remote_options=remote,
            delayed=True,
        )  # fmt: skip

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.local, name)

    def save(self, name: Any, content: Any, max_length: int | None = None) -> str:
        """Save as a queued storage does; move the file at once if asked to."""
        name = super().save(name, content, max_length)
        if os.environ.get("QS_DJANGO_SUITE_TRANSFER") == "1":
            state = self.get_state(name)
            if state is not None and state.version:
                Transfer().process(self, name, state.version)
        return name
