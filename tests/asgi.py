"""The ASGI application of the test project, for a real ASGI server."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
