"""Transfer tasks of the test app, as a project would subclass them."""

from queued_storage.tasks import Transfer


class NeverWorks(Transfer):
    """A transfer that always asks to be retried."""

    def transfer(self, name, local, remote, **kwargs):
        return False
