"""The smallest Django settings that let autodoc import queued_storage.

Nothing here is used at run time: the documentation build only needs the app
registry to be ready, so that the models and the storages can be imported.
"""

SECRET_KEY = "docs-only-not-a-secret"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "queued_storage",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
    }
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
    }
}
