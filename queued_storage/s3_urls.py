"""Public ``S3Storage`` URLs built by string formatting instead of botocore.

Without a custom domain, ``S3Storage.url()`` asks botocore's
``generate_presigned_url`` for every name, even when ``querystring_auth`` is
off and nothing is signed: some 0.2 ms a URL, which dominates a page of a
hundred files. Unsigned, the URL is the same for every key but for the key
itself, which botocore's REST serializer quotes with
``percent_encode(key, safe="/~")`` (the greedy ``{Key+}`` label of
``GetObject``). So botocore is asked once, for a sentinel key, and its answer
is split around the quoted sentinel; each name is then normalised as
``url()`` does and quoted into the gap. A second, awkward name is checked
against ``url()`` before the builder is trusted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

Builder = Callable[[str], str]

#: A key whose quoted form is itself, to find where the key goes in a URL.
SENTINEL = "queued-storage-url-sentinel"
#: A name with the characters quoting and normalisation could get wrong.
PROBE = "./a b/+%20~!'()*&=;:@$,[]?#\\é€😀//end/"

_builders: WeakKeyDictionary[Any, tuple[tuple[Any, ...], Builder | None]] = (
    WeakKeyDictionary()
)


def url_builder(storage: Any) -> Callable[[str], str] | None:
    """Return a function giving exactly ``storage.url(name)``, or None.

    The function is returned only for an ``S3Storage`` (or a subclass that
    keeps its ``url()``) with ``querystring_auth`` off and no
    ``custom_domain``: there the URL depends on nothing but the name. A
    signed URL carries a signature and an expiry that change with every key
    and moment, and with a custom domain ``url()`` is cheap already, so both
    get None, as does anything that fails the check against ``url()``. The
    function stands for ``url(name)`` without *parameters*, *expire* or
    *http_method*; a name it cannot build (one outside ``location``, or
    that normalises to the empty key) goes to ``storage.url()``, which
    returns or raises as it always does.
    """
    try:
        from storages.backends.s3 import S3Storage  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    if (
        not isinstance(storage, S3Storage)
        or type(storage).url is not S3Storage.url
        or "url" in vars(storage)
        or storage.querystring_auth
        or storage.custom_domain
    ):
        return None
    # A changed setting (tests override them) builds again rather than lie.
    fingerprint = tuple(
        getattr(storage, attr, None)
        for attr in (
            "bucket_name",
            "location",
            "endpoint_url",
            "region_name",
            "addressing_style",
            "use_ssl",
            "client_config",
        )
    )
    cached = _builders.get(storage)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    builder = _build(storage)
    _builders[storage] = (fingerprint, builder)
    return builder


def _build(storage: Any) -> Builder | None:
    """Split a URL botocore made for the sentinel; check it on the probe."""
    from botocore.utils import percent_encode  # type: ignore[import-untyped,unused-ignore]
    from storages.utils import clean_name  # type: ignore[import-untyped,unused-ignore]

    normalize = storage._normalize_name
    url = storage.url
    try:
        sentinel_url = url(SENTINEL)
        quoted = percent_encode(normalize(clean_name(SENTINEL)), safe="/~")
    except Exception:  # Any failure means: no fast path.
        return None
    if sentinel_url.count(quoted) != 1:
        return None
    prefix, _, suffix = sentinel_url.partition(quoted)

    def build(name: str) -> str:
        try:
            key = normalize(clean_name(name))
            if key:
                return f"{prefix}{percent_encode(key, safe='/~')}{suffix}"
        except Exception:  # noqa: S110 - url() gives the same error or URL
            pass
        return url(name)

    try:
        trusted = build(PROBE) == url(PROBE)
    except Exception:
        return None
    return build if trusted else None
