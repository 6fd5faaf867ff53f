"""The transfer to an ``S3Storage``, written with the storage's own client.

Through ``S3Storage.save()`` a small file costs four requests (a ``HEAD``
before, another for ``get_available_name``, the upload through boto3's
transfer manager, a ``HEAD`` after) and a large one keeps up to ten 8 MiB
parts in memory. Here a file up to the storage's multipart threshold is one
``PutObject`` with ``If-None-Match: *``, which S3 refuses with 412 when the
key exists (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html),
so nothing is ever overwritten unasked. A larger file is uploaded part by
part, after a ``HEAD``, and completed with the same condition: parts are
read into at most six reused buffers (48 MiB), hashed and uploaded by as
many threads at once. Every request carries the
MD5 of its body, so S3 refuses a damaged one, and the returned ETag is
checked against the MD5 of what was read; where the ETag is no MD5 (KMS or
customer keys), the size is checked.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from django.core.files.storage import Storage

from .exceptions import NameChanged, VerificationFailed
from .s3_etags import (
    MIB,
    READ_SIZE,
    etag_is_md5,
    etag_of,
    head_matches,
    layout,
    local_etag,
)
from .transfer import (
    TransferResult,
    _describe,
    conflict,
    local_size,
    open_local,
    verify_size,
)

#: The most bytes of parts in memory and in flight at once: six parts of
#: boto3's default 8 MiB, in buffers reused from part to part.
IN_FLIGHT = 48 * MIB
#: Parameters that reading, uploading a part and completing also need.
KEY_PARAMETERS = (
    "SSECustomerAlgorithm", "SSECustomerKey", "SSECustomerKeyMD5",
    "RequestPayer", "ExpectedBucketOwner",
)  # fmt: skip


def applies_to(remote: Storage) -> bool:
    """Return whether *remote* is an ``S3Storage`` that writes as its base does.

    A subclass that changes how files are saved or named, or a storage that
    compresses what it stores, takes the generic path.
    """
    try:
        from storages.backends.s3 import S3Storage  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return False
    cls = type(remote)
    return (
        isinstance(remote, S3Storage)
        and all(
            getattr(cls, method) is getattr(S3Storage, method)
            for method in ("save", "_save", "get_available_name")
        )
        and not getattr(remote, "gzip", False)
    )


def _keep() -> None:
    """Leave a thread's connection as the storage makes it."""


def connection_sharer(remote: Storage, threads: int) -> Callable[[], None]:
    """Return what makes the calling thread use this thread's client of *remote*.

    ``S3Storage`` makes a boto3 session and resource per thread, which costs
    a few tenths of a second of CPU each. A transfer only uses the
    resource's client, which boto3 makes safe to share between threads, so
    *threads* threads that only transfer can share this thread's when its
    connection pool holds one connection for each. For another storage, or
    a smaller pool, the function returned does nothing.
    """
    try:
        from storages.backends.s3 import S3Storage  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return _keep
    local = getattr(remote, "_connections", None)
    if (
        not applies_to(remote)
        or getattr(type(remote), "connection", None) is not S3Storage.connection
        or not isinstance(local, threading.local)
    ):
        return _keep
    try:
        connection = remote.connection  # type: ignore[attr-defined]
        config = connection.meta.client.meta.config
    except Exception:  # noqa: BLE001 - each transfer will tell what is wrong
        return _keep
    if (getattr(config, "max_pool_connections", 0) or 0) < threads:
        return _keep

    def share() -> None:
        local.connection = connection

    return share


@dataclass
class S3Object:
    """The object *key* of *bucket*, written with *params*."""

    client: Any
    bucket: str
    key: str
    params: dict[str, Any]

    @property
    def key_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if k in KEY_PARAMETERS}

    def head(self) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped,unused-ignore]

        try:
            return dict(
                self.client.head_object(
                    Bucket=self.bucket, Key=self.key, **self.key_params
                )
            )
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise

    def put(
        self, body: bytes | bytearray, digest: bytes, condition: dict[str, str]
    ) -> str:
        response = self.client.put_object(
            Bucket=self.bucket, Key=self.key, Body=body,
            ContentMD5=base64.b64encode(digest).decode(), **condition, **self.params,
        )  # fmt: skip
        return str(response.get("ETag", ""))

    def multipart(
        self,
        content: Any,
        size: int,
        part_size: int,
        condition: dict[str, str],
        digests: list[bytes],
        workers: int,
    ) -> str:
        """Upload *size* bytes of *content* in parts; return the object's ETag.

        This thread reads each part into one of *workers* buffers, reused from
        part to part, so that no more than *workers* parts are in memory; a
        pool thread hashes it (``hashlib`` lets other threads run meanwhile)
        and uploads it. The MD5 of part ``n`` is stored in ``digests[n - 1]``.
        """
        # As boto3's transfer manager does: S3 checks each part's CRC32, and
        # a server that keeps per-part checksums need not compute them again.
        checksum = {}
        config = self.client.meta.config
        if self.params.get("ChecksumAlgorithm"):
            checksum = {"ChecksumAlgorithm": self.params["ChecksumAlgorithm"]}
        elif getattr(config, "request_checksum_calculation", "") == "when_supported":
            checksum = {"ChecksumAlgorithm": "CRC32"}
        count = -(-size // part_size)
        digests[:] = [b""] * count
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=self.key, **{**self.params, **checksum}
        )
        where = {"Bucket": self.bucket, "Key": self.key, "UploadId": upload["UploadId"]}
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                sent: list[Future[dict[str, Any]]] = []
                # The buffer of each part in flight, and those free again.
                held: dict[Future[dict[str, Any]], bytearray] = {}
                free: list[bytearray] = []
                for number in range(1, count + 1):
                    length = min(part_size, size - (number - 1) * part_size)
                    if not free and len(held) >= workers:
                        # Read no further until a part is out of memory.
                        finished, _ = wait(held, return_when=FIRST_COMPLETED)
                        for future in finished:
                            future.result()  # Stop at the first error.
                            free.append(held.pop(future))
                    if length < part_size:
                        # The last, shorter part, in place of a whole buffer.
                        del free[:1]
                        buffer = bytearray(length)
                    else:
                        buffer = free.pop() if free else bytearray(part_size)
                    read_into(content, buffer)
                    future = pool.submit(
                        self.part, where, number, buffer, digests, checksum
                    )
                    sent.append(future)
                    held[future] = buffer
                ensure_end(content)
                parts = [future.result() for future in sent]
            response = self.client.complete_multipart_upload(
                **where, MultipartUpload={"Parts": parts}, **condition,
                **self.key_params,
            )  # fmt: skip
        except BaseException:
            try:
                self.client.abort_multipart_upload(**where, **self.key_params)
            except Exception:  # noqa: S110 - the first error is the one to tell
                pass
            raise
        return str(response.get("ETag", ""))

    def part(
        self,
        where: dict[str, Any],
        number: int,
        body: bytearray,
        digests: list[bytes],
        checksum: dict[str, str],
    ) -> dict[str, Any]:
        """Hash and upload part *number* of the upload *where*.

        Store its MD5 in *digests* and return what completes the upload.
        """
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        digests[number - 1] = digest
        response = self.client.upload_part(
            **where, PartNumber=number, Body=body,
            ContentMD5=base64.b64encode(digest).decode(), **checksum, **self.key_params,
        )  # fmt: skip
        done = {"ETag": response["ETag"], "PartNumber": number}
        if checksum:
            member = f"Checksum{checksum['ChecksumAlgorithm'].upper()}"
            if member in response:
                done[member] = response[member]
        return done


def read_into(content: Any, buffer: bytearray) -> None:
    """Fill *buffer* from *content*, with ``readinto`` where the file has it."""
    view, got, size = memoryview(buffer), 0, len(buffer)
    readinto = getattr(content, "readinto", None)
    try:
        while got < size:
            if readinto is not None:
                chunk = readinto(view[got : got + READ_SIZE]) or 0
            else:
                data = content.read(min(READ_SIZE, size - got))
                view[got : got + len(data)] = data
                chunk = len(data)
            if not chunk:
                raise VerificationFailed(
                    f"The local copy ended after {got} of {size} bytes of a part "
                    "while it was read; it is being written to."
                )
            got += chunk
    finally:
        view.release()


def read_exactly(content: Any, size: int) -> bytes | bytearray:
    """Read *size* bytes of *content*, in reads of at most READ_SIZE."""
    first = content.read(min(READ_SIZE, size)) if size else b""
    if len(first) == size:
        return first  # One read and no copy, the usual case.
    body = bytearray(first)
    while len(body) < size:
        chunk = content.read(min(READ_SIZE, size - len(body)))
        if not chunk:
            raise VerificationFailed(
                f"The local copy ended after {len(body)} of {size} bytes while it "
                "was read; it is being written to."
            )
        body += chunk
    return body


def ensure_end(content: Any) -> None:
    """Raise if *content* goes on: the local copy grew while it was read."""
    if content.read(1):
        raise VerificationFailed(
            "The local copy grew while it was read; it is being written to."
        )


def matches(name: str, local: Storage, remote: Any, etag: str | None = None) -> bool:
    """Return whether S3 holds the local copy of *name* (or the upload *etag*).

    See :func:`queued_storage.transfer.remote_matches`.
    """
    key = remote._normalize_name(name)
    params = remote.get_object_parameters(key)
    params = {k: v for k, v in params.items() if k in KEY_PARAMETERS}
    client = remote.connection.meta.client
    head = S3Object(client, remote.bucket_name, key, params).head()
    if head is None:
        return False
    size = int(head.get("ContentLength") or 0)
    if etag is None:
        try:
            etag, size = local_etag(local, name, remote.transfer_config)
        except OSError:
            return True
    return head_matches(head, size, etag)


def _supports_if_none_match(client: Any) -> bool:
    """Return whether this botocore knows ``PutObject``'s ``IfNoneMatch``."""
    shape = client.meta.service_model.operation_model("PutObject").input_shape
    return "IfNoneMatch" in shape.members


def transfer(
    name: str,
    local: Storage,
    remote: Any,
    *,
    replace: bool,
    content_type: str,
    conditional: bool,
    expected: int | None = None,
) -> TransferResult:
    """Copy *name* from *local* to the ``S3Storage`` *remote*; see the module.

    *expected* is the size recorded when the file was saved, if known.
    """
    from botocore.exceptions import ClientError  # type: ignore[import-untyped,unused-ignore]
    from storages.utils import clean_name  # type: ignore[import-untyped,unused-ignore]

    if clean_name(name) != name:
        raise NameChanged(
            f"{_describe(remote)} would store {name!r} as {clean_name(name)!r}; "
            "nothing was uploaded. Use names that need no cleaning."
        )
    found = local_size(name, local, remote, expected)
    if isinstance(found, TransferResult):
        return found
    size = found
    key = remote._normalize_name(name)
    client = remote.connection.meta.client
    conditional = conditional and _supports_if_none_match(client)
    config = remote.transfer_config
    single, part_size = layout(size, config)
    with open_local(name, local, size) as content:
        if content_type:
            content.content_type = content_type
        target = S3Object(
            client, remote.bucket_name, key, remote._get_write_parameters(key, content)
        )
        if not replace and not (single and conditional):
            # A large file is not read only to learn that it is already there.
            existing = target.head()
            if existing is not None:
                if head_matches(existing, size, None):
                    return TransferResult(name, size, uploaded=False)
                raise conflict(name, remote)
        condition = {"IfNoneMatch": "*"} if conditional and not replace else {}
        digests: list[bytes] = []
        try:
            if single:
                body = read_exactly(content, size)
                ensure_end(content)
                digests.append(hashlib.md5(body, usedforsecurity=False).digest())
                etag = target.put(body, digests[0], condition)
            else:
                workers = min(config.max_request_concurrency, IN_FLIGHT // part_size)
                if not config.use_threads:
                    workers = 1
                etag = target.multipart(
                    content, size, part_size, condition, digests, max(1, workers)
                )
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 412:
                raise
            existing = target.head()
            ours = etag_of(digests) if digests else None
            if existing is not None and head_matches(existing, size, ours):
                return TransferResult(name, size, uploaded=False)
            raise conflict(name, remote) from None
    if etag.strip('"') != etag_of(digests):
        head = target.head()
        if head is None or etag_is_md5(head):
            # What S3 stored is not what was read: damaged on the way. The
            # object is this upload's own; remove it so a retry can upload.
            client.delete_object(
                Bucket=remote.bucket_name, Key=key, **target.key_params
            )
            raise VerificationFailed(
                f"The remote copy of {name!r} has the ETag {etag}, not the MD5 "
                f"{etag_of(digests)} of the bytes read; it was removed."
            )
        # Not an MD5 (KMS or customer keys): the size on the remote decides.
        verify_size(name, head.get("ContentLength"), size)
    return TransferResult(name, size, uploaded=True, checksum=etag.strip('"'))
