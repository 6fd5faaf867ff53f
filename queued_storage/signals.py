"""Signals sent along a file's life in a queued storage.

Each is sent after the state change it reports has been recorded (and, with
the ledger, committed), with ``sender`` set to the task or storage class.
"""

from django.dispatch import Signal

#: Sent by the worker once the state says the file is served from the remote.
#: Arguments: ``name``, ``local``, ``remote`` (the two storages), ``storage``
#: (the queued storage).
file_transferred = Signal()

#: Sent when a file has been saved locally and its transfer queued (or left
#: for a later ``transfer()`` call when the storage is delayed). Not sent when
#: the broker could not be reached: the file then waits for a reconcile.
#: With ``QUEUED_STORAGE_OUTBOX``, sent by the dispatcher, in its process,
#: once it has sent the message.
#: Arguments: ``name``, ``storage`` (the queued storage), ``version``.
file_queued = Signal()

#: Sent when a transfer has failed for good: retries ran out or the error
#: cannot be retried. The file is still served from the local copy.
#: Arguments: ``name``, ``storage``, ``error`` (a message), ``attempts``.
transfer_failed = Signal()

#: Sent by ``TransferAndDelete`` after it removed the local copy, and when a
#: storage's ``local_retention`` or ``local_max_bytes`` removed one.
#: Arguments: ``name``, ``storage``.
local_deleted = Signal()
