"""Keep credentials and oversized values out of what the package shows.

Every error text that the package logs, records in the ledger, prints from a
command or shows in the admin passes through :func:`redact`. Backends put
their configuration in error messages (the FTP storage shows its whole
connection data, password included, as a ``repr()``), so masking the
configured secrets is not enough: their escaped and quoted forms, URL
passwords and ``name=value`` pairs whose name looks like a credential are
masked too, whatever storage they come from.

The logger ``queued_storage`` carries a filter that applies :func:`redact`
with the secrets of every queued storage of the process, and bounds the
size of each record, so that a forged message with a 20 MB name makes a
record of a few kilobytes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

#: What the name of an option or of a ``name=value`` pair holding a credential
#: contains: ``password``, ``passwd``, ``passphrase``, ``pass``, ``pwd``,
#: ``secret_key``, ``account_key``, ``sas_token``, ``auth``, ``credentials``,
#: ``connection_string``, ``AccountKey``, ``sig``...
SECRET_NAME = re.compile(
    r"pass|pwd|secret|key|token|auth|credential|connection_?string|sas|sig", re.I
)

#: The text that replaces a secret.
MASK = "***"
#: Secrets shorter than this are not searched for as bare strings (they would
#: mask unrelated text); the patterns still mask them after a name or in a URL.
MIN_SECRET = 4
#: The longest repr of a value that a log record carries.
SHOWN_CHARS = 200
#: The longest log record, in characters, that the package emits.
RECORD_CHARS = 8192

# scheme://user:password@host: the password runs to the last "@" of the
# token, since FTP's location parser lets it hold "/", "#", "?" and "@".
_URL_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s:/@'\"]{0,256}):"
    r"(?P<pw>[^\s'\"]{0,1024})@"
)
# Names are bounded and start after a non-word character, so that a long run
# of letters costs linear time, not quadratic.
_PAIR = re.compile(
    r"(?<![\w\-])(?P<q>[\"']?)(?P<name>[A-Za-z_][\w\-]{0,63})(?P=q)"
    r"(?P<sep>\s*[:=]\s*)"
    r"(?P<value>'(?:\\.|[^'\\]){0,4096}'|\"(?:\\.|[^\"\\]){0,4096}\""
    r"|[^\s,;&}\])'\"]{1,4096})"
)
_BEARER = re.compile(r"\b(?P<kind>Bearer|Basic)\s+[A-Za-z0-9+/=._~\-]+")
_PEM = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
    re.S,
)


def is_secret_name(name: str) -> bool:
    """Return whether an option called *name* is taken for a credential."""
    return bool(SECRET_NAME.search(name))


# An option that is a URL as a whole: its user information runs to the last
# "@", as FTPStorage's own parser reads it (the password may hold "/", "#",
# "?", "@" and quotes).
_WHOLE_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>.*)@(?P<rest>[^@]*)", re.S
)
# How FTPStorage splits its location, which may differ when the password
# holds ":": its greedy user name takes the colons.
_FTP_LOCATION = re.compile(r"^(?:.+)://(?P<user>.+):(?P<pw>.+)@(?:.+):\d+/.*$", re.S)


def url_passwords(value: str) -> list[str]:
    """Return the credentials of the URLs in *value* (``ftp://user:pw@host``).

    For a value that is one URL, the whole user information, the part after
    its first colon and the password as FTPStorage reads it; for URLs inside
    a longer text, the passwords the pattern finds.
    """
    found = [m["pw"] for m in _URL_USERINFO.finditer(value) if m["pw"]]
    whole = _WHOLE_URL.fullmatch(value.strip())
    if whole:
        userinfo = whole["userinfo"]
        found += [userinfo, userinfo.partition(":")[2]]
        ftp = _FTP_LOCATION.match(value.strip())
        if ftp:
            found.append(ftp["pw"])
    return [item for item in found if item]


def without_userinfo(value: str) -> str:
    """Return *value* with the user and password of its URLs removed."""
    whole = _WHOLE_URL.fullmatch(value.strip())
    if whole:
        return whole["scheme"] + whole["rest"]
    return _URL_USERINFO.sub(lambda m: m["head"].split("://")[0] + "://", value)


def secrets_in(value: Any, name: str = "", depth: int = 0) -> list[str]:
    """Return the secret strings of the options *value* (dicts, lists, strings).

    A string is a secret when the option holding it has a secret name; the
    password of a URL is one wherever it appears.
    """
    if depth > 6:
        return []
    if isinstance(value, dict):
        pairs = value.items()
        return [s for k, v in pairs for s in secrets_in(v, str(k), depth + 1)]
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in secrets_in(item, name, depth + 1)]
    if not isinstance(value, str):
        return []
    found = [value] if is_secret_name(name) else []
    if "://" in value:
        found += url_passwords(value)
    return found


def _forms(secret: str) -> set[str]:
    """Return the ways *secret* can be spelled in an error text."""
    escaped = secret.replace("\\", "\\\\")
    return {
        secret,
        repr(secret)[1:-1],
        escaped.replace("'", "\\'"),
        escaped.replace('"', '\\"'),
        json.dumps(secret)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    }


def _mask_pair(match: re.Match[str]) -> str:
    if not is_secret_name(match["name"]):
        return match[0]
    value = match["value"]
    masked = value[0] + MASK + value[0] if value[0] in "'\"" else MASK
    q = match["q"]
    return f"{q}{match['name']}{q}{match['sep']}{masked}"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return *text* with credentials masked.

    *secrets* are the configured credentials: each is masked in every form a
    message may spell it in (as is, escaped by ``repr()`` in either kind of
    quotes, in JSON, URL-encoded). Then, whatever the configuration, URL
    passwords, the values of ``name=value`` and ``'name': 'value'`` pairs
    whose name looks like a credential, bearer tokens and private keys are
    masked.
    """
    long_enough = (secret for secret in secrets if len(secret) >= MIN_SECRET)
    forms = {form for secret in long_enough for form in _forms(secret)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    text = _PEM.sub(MASK, text)
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _PAIR.sub(_mask_pair, text)
    return _BEARER.sub(lambda m: f"{m['kind']} {MASK}", text)


def shorten(value: Any, limit: int = SHOWN_CHARS) -> str:
    """Return the repr of *value*, cut to about *limit* characters.

    A forged message chooses its names and arguments: what a log shows of
    them stays bounded whatever they hold. Long strings are cut before
    ``repr()`` builds a copy of them.
    """
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    if isinstance(value, dict):
        items = list(value.items())
        shown = ", ".join(
            f"{shorten(k, limit // 4)}: {shorten(v, limit // 2)}" for k, v in items[:8]
        )
        more = f", ... ({len(items)} items)" if len(items) > 8 else ""
        return _cut("{" + shown + more + "}", limit * 4)
    if isinstance(value, (list, tuple)):
        shown = ", ".join(shorten(v, limit // 2) for v in list(value)[:8])
        more = f", ... ({len(value)} items)" if len(value) > 8 else ""
        return _cut("[" + shown + more + "]", limit * 4)
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return _cut(text, limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def known_secrets() -> list[str]:
    """Return the secrets of every queued storage of this process."""
    from . import registry

    return [s for storage in registry.instances() for s in storage.secrets()]


def redact_all(text: str) -> str:
    """Return *text* redacted with the secrets of every queued storage."""
    try:
        secrets = known_secrets()
    except Exception:  # A storage that cannot say: the patterns still apply.
        secrets = []
    return redact(text, secrets)


class RedactingFilter(logging.Filter):
    """Mask credentials in, and bound the size of, every record it sees.

    The message, the exception's text and the ``file_name`` and ``storage``
    extras are rewritten only when something changes, so that handlers that
    group records by their format string keep doing so.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = _bounded(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = _bounded(text)
        for extra in ("file_name", "storage"):
            value = getattr(record, extra, None)
            if isinstance(value, str) and len(value) > SHOWN_CHARS:
                cut = f"{value[:SHOWN_CHARS]}... ({len(value)} characters)"
                setattr(record, extra, cut)
        return True


def _bounded(text: str) -> str:
    """Return *text* redacted and cut to :data:`RECORD_CHARS`.

    The text is cut before it is redacted, with a margin so that a secret
    that straddles the cut is still recognised.
    """
    if len(text) > RECORD_CHARS:
        head = redact_all(text[: RECORD_CHARS + 1024])[:RECORD_CHARS]
        return f"{head}... ({len(text)} characters)"
    return redact_all(text)


#: The filter of the ``queued_storage`` logger.
FILTER = RedactingFilter()


def install(logger_name: str = "queued_storage") -> None:
    """Put :data:`FILTER` on the package's logger (once)."""
    logging.getLogger(logger_name).addFilter(FILTER)


install()
