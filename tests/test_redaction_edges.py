"""Redaction of what logs and errors show, on values built to break it."""

from __future__ import annotations

import logging

from queued_storage import redaction, registry


def test_a_value_whose_repr_fails_is_shown_by_its_type():
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    assert redaction.shorten(Hostile()) == "<Hostile>"


def test_options_that_contain_themselves_are_searched_to_a_bound():
    options: dict = {"password": "s3cret-value"}
    options["self"] = options
    looped: list = ["ftp://user:in-a-loop@host/"]
    looped.append(looped)
    found = redaction.secrets_in({"options": options, "list": looped})
    assert "s3cret-value" in found
    assert "in-a-loop" in found


def test_user_information_is_removed_from_urls_inside_a_text():
    text = "could not reach ftp://user:pw-123@files.example/x, giving up"
    cleaned = redaction.without_userinfo(text)
    assert "pw-123" not in cleaned and "user" not in cleaned
    assert "files.example/x, giving up" in cleaned


def test_a_whole_url_gives_its_password_and_its_user_information():
    found = redaction.url_passwords("https://admin:pa55@api.example/v1")
    assert "pa55" in found
    assert "admin:pa55" in found


def test_a_storage_that_cannot_list_its_secrets_leaves_the_patterns_working(
    monkeypatch,
):
    class Unwell:
        def secrets(self) -> list[str]:
            raise RuntimeError("options cannot be read")

    monkeypatch.setattr(registry, "instances", lambda: [Unwell()])
    text = redaction.redact_all("failed: ftp://user:hunter2@host/ (timeout)")
    assert "hunter2" not in text
    assert "host/ (timeout)" in text


def test_a_record_that_cannot_be_formatted_passes_unchanged():
    record = logging.LogRecord(
        "queued_storage", logging.WARNING, __file__, 1, "%s and %s", ("one",), None
    )
    assert redaction.FILTER.filter(record) is True
    assert (record.msg, record.args) == ("%s and %s", ("one",))
