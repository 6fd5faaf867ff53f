"""The Django app configuration of queued_storage."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class QueuedStorageConfig(AppConfig):
    name = "queued_storage"
    verbose_name = _("Queued storage")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the checks, the settings' defaults and the log filter.
        from . import (  # noqa: F401
            broker_checks,
            checks,
            conf,
            redaction,
            runner_checks,
        )
