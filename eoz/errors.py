"""One exception hierarchy for the whole project.

Every error is an ``EozError`` and also the builtin it resembles (as rasterio's
``CRSError(ValueError)``), so callers may catch either. The service maps these classes
to HTTP problem responses in one table.
"""


class EozError(Exception):
    """Base of every error eoz raises on purpose."""


class ContainerError(EozError, ValueError):
    """A .eoz file is not one, is of an unknown version, or is damaged."""


class TruncatedFileError(ContainerError):
    """The file ends before the container says it should."""


class CorruptTileError(ContainerError):
    """A tile's bytes do not match the checksum in the tile table."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


class ModelMismatchError(EozError, ValueError):
    """A stream was encoded with other weights or codebooks than the model offered to decode it."""


class UnknownModelError(EozError, LookupError):
    """No model with that id (or version) is in the model store."""


class InputError(EozError, ValueError):
    """An input raster cannot be compressed as asked (bands, dtype, size, format)."""


class SampleTypeError(InputError):
    """A raster of a sample type that no codec takes; ``reason`` says so without naming the file
    (the service's message must not name its scratch copy)."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source} {reason}")
        self.reason = reason


class DecodeLimitError(ContainerError):
    """A file asks for more than the decode limits allow (eoz.limits.DecodeLimits): a bigger
    image, tile or side information than decoding is allowed to cost."""
