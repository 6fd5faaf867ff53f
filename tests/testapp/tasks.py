"""Transfer tasks of the test app, as a project would subclass them."""

from queued_storage.tasks import Transfer


class BrokenUntilFixed(Transfer):
    """A transfer that asks to be retried until a test declares it fixed."""

    fixed = False

    def transfer(self, name, local, remote, **kwargs):
        if type(self).fixed:
            return super().transfer(name, local, remote, **kwargs)
        return False
