"""eoz: learned compression of Earth-observation rasters.

The codec library: container format, models, entropy coding, tiling and GeoTIFF I/O.
It imports nothing of the web service or the job queue; those layers call into it.
"""

from eoz.errors import (
    ContainerError,
    CorruptTileError,
    EozError,
    InputError,
    ModelMismatchError,
    TruncatedFileError,
    UnknownModelError,
)

__version__ = "0.1.0"

__all__ = [
    "ContainerError",
    "CorruptTileError",
    "EozError",
    "InputError",
    "ModelMismatchError",
    "TruncatedFileError",
    "UnknownModelError",
    "__version__",
]
