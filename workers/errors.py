"""The service's own errors, in the eoz hierarchy (each also the builtin it resembles).

The API maps every one of them, with the library's, to a status code in one table
(``app/errors.py``); nothing here knows about HTTP.
"""

from eoz.errors import EozError, InputError


class JobNotFoundError(EozError, LookupError):
    """No job with that id (never submitted, or expired from the queue's records)."""


class JobEndedError(EozError, RuntimeError):
    """The job already finished or failed: there is nothing left to cancel."""


class JobCanceledError(EozError, RuntimeError):
    """Raised inside a running job that was canceled, to stop it where it stands."""


class ResultNotReadyError(EozError, RuntimeError):
    """The job has not finished, so it has no result to fetch yet."""


class ObjectNotFoundError(EozError, FileNotFoundError):
    """The object store has no object under that key."""


class TransientStoreError(EozError, ConnectionError):
    """The object store failed in a way that may pass (network, throttling, 5xx): retry later."""


class UnsupportedMediaError(InputError):
    """The upload is not the kind of file the endpoint takes (not a GeoTIFF, not an .eoz)."""


class TooLargeError(InputError):
    """The input is over a configured limit (bytes, pixels or bands)."""


class SourceNotAllowedError(InputError):
    """An S3-key source outside the buckets and prefixes the service may read."""


class SourceNotFoundError(InputError):
    """An S3-key source that names no object."""
