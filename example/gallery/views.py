"""The gallery's pages: the upload form, the live table and its JSON feed."""

import posixpath
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from queued_storage.fields import prefetch_states

from .forms import UploadForm
from .models import Upload

#: How many of the latest uploads the page shows.
LATEST = 50

#: What the page calls each state of a file, and what it tells about it.
LABELS = {
    "pending": ("local", "Saved on the local storage, waiting for the worker."),
    "transferring": ("transferring", "The worker is copying it to the remote storage."),
    "transferred": ("remote", "Served from the remote storage."),
    "failed": ("failed", "The transfer failed; the local copy is still served."),
    "deleted": ("deleted", "The file was deleted."),
}


def describe(uploads: list[Upload]) -> list[dict[str, Any]]:
    """Return what the page shows about each of *uploads*, as JSON-ready data.

    ``prefetch_states`` reads the states of all the files in one cache round
    trip per 500 files; each file's ``state`` and ``url`` then ask nothing
    more.
    """
    return [describe_one(upload) for upload in prefetch_states(uploads)]


def describe_one(upload: Upload) -> dict[str, Any]:
    """Return what anyone may see of *upload*, its state prefetched.

    The page and its feed are public: a transfer's error text (with server
    paths, hosts, exception details) stays in the worker's log and the
    ledger, and the page only says that an attempt failed.
    """
    state = upload.file.state
    name = upload.file.name
    status = str(state.status) if state is not None else "missing"
    label, help_text = LABELS.get(status, (status, "The file cannot be found."))
    if status == "pending" and state.error:
        help_text = "Still on the local storage; the worker will try again."
    if upload.file.transferred_at is not None:
        moved = upload.file.transferred_at.strftime("%H:%M:%S")
        help_text = f"Served from the remote storage since {moved} UTC."
    url = served_from = ""
    if state is not None and not state.is_deleted:
        # The prefetched state decides both, so the URL and the status agree.
        served_from = "remote" if upload.file.is_transferred else "local"
        url = upload.file.url
    extension = posixpath.splitext(name)[1].lstrip(".").upper() or "FILE"
    return {
        "id": upload.pk,
        "name": name,
        "basename": upload.basename,
        "status": status,
        "label": label,
        "help": help_text,
        "error": FAILED_ATTEMPT if state is not None and state.error else "",
        "attempts": state.attempts if state is not None else 0,
        "url": url,
        "served_from": served_from,
        "is_image": upload.is_image,
        "extension": extension,
        "uploaded": upload.uploaded.isoformat(),
        "transferred_at": (
            upload.file.transferred_at.isoformat() if upload.file.transferred_at else ""
        ),
        "retry_url": reverse("gallery:retry", args=[upload.pk]),
    }


#: What the public page says of a failed attempt, in place of its error text.
FAILED_ATTEMPT = "The last attempt failed; the worker's log has the details."


def latest_uploads() -> list[dict[str, Any]]:
    return describe(list(Upload.objects.all()[:LATEST]))


def storage_names() -> tuple[str, str]:
    """Return short descriptions of the local and the remote storage."""
    local = f"a folder served at {settings.MEDIA_URL}local/"
    if settings.S3_BUCKET:
        remote = f"the S3 bucket {settings.S3_BUCKET}"
    else:
        remote = (
            f"a second folder served at {settings.MEDIA_URL}remote/, "
            "standing in for a cloud bucket"
        )
    return local, remote


@require_http_methods(["GET", "HEAD", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    """Show the form and the table; on POST, store each file sent."""
    if request.method == "POST":
        limit = settings.EXAMPLE_MAX_UPLOAD_BYTES
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
            # Refused before the body is read: nothing is written to disk.
            return HttpResponse(
                f"Uploads are limited to {limit} bytes.",
                status=413,
                content_type="text/plain",
            )
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            created = []
            for uploaded_file in form.cleaned_data["files"]:
                upload = Upload.objects.create(file=uploaded_file)
                created.append(str(upload.pk))
            url = reverse("gallery:index") + "?uploaded=" + ",".join(created)
            return redirect(url)
        status = 400
    else:
        form = UploadForm()
        status = 200
    highlighted = set(request.GET.get("uploaded", "").split(","))
    uploads = latest_uploads()
    for upload in uploads:
        upload["new"] = str(upload["id"]) in highlighted
    local_storage, remote_storage = storage_names()
    context = {
        "form": form,
        "uploads": uploads,
        "blank": {},
        "local_storage": local_storage,
        "remote_storage": remote_storage,
    }
    return render(request, "gallery/index.html", context, status=status)


@require_GET
def uploads_json(request: HttpRequest) -> JsonResponse:
    """Return the latest uploads and where each one is served from."""
    return JsonResponse({"uploads": latest_uploads()})


@require_POST
def retry(request: HttpRequest, pk: int) -> HttpResponse:
    """Put the transfer of a failed upload on the queue again.

    A POST with the CSRF token of the page, for a file whose transfer has
    failed: anything else is refused with 409 and queues nothing. The file
    is then pending again, so each failure allows one retry, however often
    the button is pressed.
    """
    upload = get_object_or_404(Upload, pk=pk)
    storage, name = upload.file.storage, upload.file.name
    state = storage.get_state(name)
    if state is None or state.status != "failed":
        return HttpResponse(
            "Only a failed transfer can be retried.",
            status=409,
            content_type="text/plain",
        )
    storage.transfer(name)
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse(describe([upload])[0])
    return redirect("gallery:index")
