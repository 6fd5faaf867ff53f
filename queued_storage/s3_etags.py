"""The ETags S3 gives uploads, computed locally to tell our copy from another.

S3's ETag of an unencrypted object is the MD5 of its body, or, for a
multipart upload, the MD5 of the parts' MD5s followed by ``-`` and the number
of parts. Computing it for the local copy, with the part size the upload
uses, tells whether the remote object holds exactly the local bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.files.storage import Storage

MIB = 1024 * 1024
#: The largest read from the local file.
READ_SIZE = 8 * MIB
#: The largest body kept in memory: a single upload or one part.
BODY_LIMIT = 16 * MIB
#: S3's smallest part (but the last) and largest number of parts.
MIN_PART, MAX_PARTS = 5 * MIB, 10_000


def layout(size: int, config: Any) -> tuple[bool, int]:
    """Return whether *size* bytes go up in one request, and the part size."""
    single = size <= min(config.multipart_threshold, BODY_LIMIT)
    part_size = max(
        MIN_PART, min(config.multipart_chunksize, BODY_LIMIT), -(-size // MAX_PARTS)
    )
    return single, part_size


def local_etag(local: Storage, name: str, config: Any) -> tuple[str, int]:
    """Return the ETag an upload of *name*'s local copy would get, and its size."""
    size = local.size(name)
    single, part_size = layout(size, config)
    part = max(size, 1) if single else part_size
    digests = []
    with local.open(name, "rb") as content:
        for start in range(0, max(size, 1), part):
            digest = hashlib.md5(usedforsecurity=False)
            left = min(part, size - start)
            while left > 0 and (chunk := content.read(min(READ_SIZE, left))):
                digest.update(chunk)
                left -= len(chunk)
            digests.append(digest.digest())
    return etag_of(digests), size


def etag_of(digests: list[bytes]) -> str:
    """Return the ETag S3 gives an unencrypted object uploaded as *digests*."""
    if len(digests) == 1:
        return digests[0].hex()
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(digests)}"


def etag_is_md5(head: dict[str, Any]) -> bool:
    encryption = str(head.get("ServerSideEncryption", ""))
    return not encryption.startswith("aws:kms") and not head.get("SSECustomerAlgorithm")


def head_matches(head: dict[str, Any], size: int, etag: str | None) -> bool:
    """Return whether the object described by *head* is our file.

    The ETag decides when both are MD5s of the same kind (single or of as
    many parts); otherwise the size does, as for any other storage.
    """
    if head.get("ContentLength") != size:
        return False
    theirs = str(head.get("ETag", "")).strip('"')
    comparable = (
        etag is not None
        and etag_is_md5(head)
        and theirs.partition("-")[2] == etag.partition("-")[2]
    )
    return theirs == etag if comparable else True
