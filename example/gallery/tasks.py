"""The gallery's transfer task: the package's own, slowed down for watching."""

import time
from typing import Any

from django.conf import settings

from queued_storage.tasks import Transfer


class SlowTransfer(Transfer):
    """Transfer a file after ``EXAMPLE_TRANSFER_DELAY`` seconds.

    Copying between two folders of one disk takes milliseconds; the pause
    keeps each file in the "transferring" state long enough to be seen on the
    page. Overriding ``transfer()`` is also how a project changes the way its
    files move.
    """

    def transfer(self, name: str, local: Any, remote: Any, **kwargs: Any) -> bool:
        time.sleep(settings.EXAMPLE_TRANSFER_DELAY)
        return super().transfer(name, local, remote, **kwargs)
