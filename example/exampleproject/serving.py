"""Serve the example's storage folders without serving a page from them.

Uploads are chosen by anonymous visitors. A file served inline from the
site's own origin as HTML or SVG runs its scripts with the site's cookies
(stored cross-site scripting), so only types that browsers never execute
are shown inline; everything else is sent as a download. Every response
forbids type sniffing and runs in a sandbox without scripts.
"""

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.static import serve

#: Types a browser shows without running anything in them.
INLINE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "text/plain"}
)


def serve_safely(request: HttpRequest, path: str, document_root: Any) -> HttpResponse:
    """Return the file *path* below *document_root*, defanged; see the module."""
    response = serve(request, path, document_root=document_root)
    content_type = response.get("Content-Type", "").split(";")[0].strip().lower()
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    if content_type not in INLINE_TYPES:
        # An <img> still shows an SVG; opened as a page, it is downloaded.
        shown = response.get("Content-Disposition", "")
        response["Content-Disposition"] = (
            "attachment" + shown[len("inline") :]
            if shown.startswith("inline")
            else "attachment"
        )
    return response
