"""Claims of docs/security.rst about messages that no other test checks."""

from __future__ import annotations

from typing import Any

import pytest
from celery.signals import before_task_publish
from django.core import signing
from django.core.files.base import ContentFile
from django.test import override_settings

from queued_storage import message
from queued_storage.exceptions import InvalidMessage
from queued_storage.tasks import Transfer

pytestmark = pytest.mark.django_db


def test_signatures_of_other_uses_of_secret_key_are_no_message_signature():
    """The salt keeps transfer signatures apart from signed cookies and the like."""
    fields = [Transfer.name, "s3", "a.txt", "v"]
    for salt in ("", "django.http.cookies", "django.contrib.sessions"):
        forged = {
            "storage": "s3", "name": "a.txt", "version": "v",
            "signature": signing.dumps(fields, salt=salt),
        }  # fmt: skip
        with pytest.raises(InvalidMessage, match="not valid"):
            message.verify(Transfer.name, forged)
    # And the reverse: a message signature is no cookie or plain signature.
    signature = message.sign(Transfer.name, "s3", "a.txt", "v")["signature"]
    for salt in ("", "django.http.cookies"):
        with pytest.raises(signing.BadSignature):
            signing.loads(signature, salt=salt)


def test_published_message_shows_no_signature_to_monitors(fs_queued, unique):
    """Celery's events and monitors see the storage, name and version only."""
    published: list[dict[str, Any]] = []

    def seen(headers: dict[str, Any], body: Any, **kwargs: Any) -> None:
        published.append({"headers": headers, "body": body})

    before_task_publish.connect(seen, weak=False)
    try:
        # A queue of its own, which no worker of the suite consumes.
        with override_settings(QUEUED_STORAGE_QUEUE=f"claims-{unique}"):
            storage = fs_queued(delayed=True)
            name = storage.save("shown.txt", ContentFile(b"x"))
            storage.enqueue(name, storage.get_state(name).version)
    finally:
        before_task_publish.disconnect(seen)
    assert len(published) == 1
    shown = published[0]["headers"]["kwargsrepr"]
    _, kwargs, _ = published[0]["body"]
    assert kwargs["signature"] and kwargs["signature"] not in shown
    assert "signature" not in shown
    assert repr(name) in shown and storage.reference in shown


def test_old_key_in_fallbacks_verifies_and_removed_it_changes_nothing(fs_queued):
    """Rotating SECRET_KEY: the fallbacks verify; without them, nothing happens."""
    from celery.exceptions import Reject

    storage = fs_queued(delayed=True)
    name = storage.save("rotated.txt", ContentFile(b"x"))
    state = storage.get_state(name)
    with override_settings(SECRET_KEY="the-old-key-" + "x" * 40):
        old = message.sign(Transfer.name, storage.reference, name, state.version)
    new_key = "the-new-key-" + "y" * 40
    with override_settings(SECRET_KEY=new_key, SECRET_KEY_FALLBACKS=[]):
        with pytest.raises(Reject):
            Transfer().run(**old)
        assert storage.get_state(name) == state
        assert not storage.remote.exists(name)
    with override_settings(
        SECRET_KEY=new_key, SECRET_KEY_FALLBACKS=["the-old-key-" + "x" * 40]
    ):
        assert message.verify(Transfer.name, old) == (
            storage.reference,
            name,
            state.version,
        )
        assert Transfer().run(**old) is True
    assert storage.get_state(name).is_remote
