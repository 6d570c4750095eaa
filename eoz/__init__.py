"""eoz: learned compression of Earth-observation rasters.

The codec library: container format, models, entropy coding, tiling and GeoTIFF I/O.
It imports nothing of the web service or the job queue; those layers call into it.

The public Python API (``eoz.api``; the README's "Python API")::

    import eoz
    result = eoz.compress("scene.tif", "scene.eoz", psnr=45)    # model="auto" by default
    eoz.decompress("scene.eoz", "part.tif", window=(0, 0, 256, 256), cog=True)
    with eoz.open("scene.eoz") as ds:
        ds.profile, ds.read(window=(0, 0, 256, 256))

Importing eoz loads neither torch nor GDAL; the codecs load on the first call.
"""

from eoz.api import Compressed, EozDataset, compress, decompress, open
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
    "Compressed",
    "ContainerError",
    "CorruptTileError",
    "EozDataset",
    "EozError",
    "InputError",
    "ModelMismatchError",
    "TruncatedFileError",
    "UnknownModelError",
    "__version__",
    "compress",
    "decompress",
    "open",
]
