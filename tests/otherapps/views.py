"""Async views that read a queued file, as a project's templates would."""

from django.http import HttpRequest, JsonResponse

from .models import Picture


async def picture(request: HttpRequest, pk: int) -> JsonResponse:
    """Answer what a template shows of a picture: URL, existence, size."""
    found = await Picture.objects.aget(pk=pk)
    image = found.image
    with image.storage.open(image.name) as opened:
        head = opened.read(4).hex()
    return JsonResponse({
        "url": image.url,
        "exists": image.storage.exists(image.name),
        "size": image.size,
        "head": head,
    })  # fmt: skip
