"""Test files for the apps that read images, and states set without a queue."""

from __future__ import annotations

import io
import secrets
from typing import Any

from django.core.files.base import ContentFile
from PIL import Image

from queued_storage.state import FileState, Status


def png(width: int = 32, height: int = 24, colour: str = "red") -> bytes:
    """Return the bytes of a small PNG image."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def put_pending(storage: Any, name: str, content: bytes) -> str:
    """Save *content* locally and record it pending, sending no message.

    No worker can pick it up, so it stays pending for the whole test.
    """
    name = storage.local.save(name, ContentFile(content))
    state = FileState(Status.PENDING, secrets.token_hex(8), len(content))
    storage.state.record(name, state)
    return str(name)


def put_transferred(storage: Any, name: str, content: bytes) -> str:
    """Save *content* on both storages and record it transferred."""
    name = put_pending(storage, name, content)
    storage.remote.save(name, ContentFile(content))
    state = FileState(Status.TRANSFERRED, secrets.token_hex(8), len(content))
    storage.state.record(name, state)
    return name


def forget_cached_state(storage: Any, name: str) -> None:
    """Drop the cached state of *name*, as a restart or an eviction would."""
    storage.state.cache.delete(storage.get_cache_key(name))
