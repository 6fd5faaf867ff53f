"""URLs of the example project.

Both storages of the example are folders; Django serves them here so that the
example needs no other web server. A real site serves its local folder with
its web server and its remote storage from the cloud, with the same care as
:mod:`exampleproject.serving`: uploads from strangers are never pages of the
site's origin.
"""

from django.conf import settings
from django.urls import include, path, re_path

from .serving import serve_safely as serve

urlpatterns = [
    re_path(
        r"^media/local/(?P<path>.*)$",
        serve,
        {"document_root": settings.LOCAL_MEDIA_ROOT},
    ),
    path("", include("gallery.urls")),
]

if not settings.S3_BUCKET:
    urlpatterns.insert(
        1,
        re_path(
            r"^media/remote/(?P<path>.*)$",
            serve,
            {"document_root": settings.REMOTE_MEDIA_ROOT},
        ),
    )
