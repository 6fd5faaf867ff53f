"""Where a queued storage keeps its files on disk: the local storage's place.

Apps written for ``FileSystemStorage`` (thumbnail libraries, cleanup
commands) read ``location``, ``base_location`` and ``base_url`` to find files
on disk, and pass absolute paths inside ``location`` back as names. On a
queued storage these are the local storage's, where every file is written
first.
"""

from __future__ import annotations

import os
from typing import Any

from .names import relative_to


class LocalPlace:
    """The local storage's location, URL and absolute paths, on a queued one."""

    local: Any

    def validate_name(self, name: Any) -> str:
        raise NotImplementedError

    @property
    def location(self) -> str:
        """Return the local storage's ``location``."""
        return self._local_attribute("location")

    @property
    def base_location(self) -> str:
        """Return the local storage's ``base_location``."""
        return self._local_attribute("base_location")

    @property
    def base_url(self) -> str:
        """Return the local storage's ``base_url``."""
        return self._local_attribute("base_url")

    def _local_attribute(self, attribute: str) -> Any:
        try:
            return getattr(self.local, attribute)
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__}'s local storage has no {attribute!r}."
            ) from None

    def relative_name(self, name: Any) -> str:
        """Return *name* checked, with an absolute local path made relative.

        As ``FileSystemStorage`` does, an absolute path that lies inside the
        local storage's ``location`` names the file at that relative path. A
        path that leaves the location, lexically or through a symbolic link,
        is refused.
        """
        if isinstance(name, str) and os.path.isabs(name):
            name = relative_to(name, getattr(self.local, "location", None))
        return self.validate_name(name)
