"""JPEG 2000 (OpenJPEG through imagecodecs): the classical baseline and the lossless option.

All bands go into one raw J2K codestream, one component per band, with no colour
transform (mct=False), single tile, single quality layer, OpenJPEG's default resolution
count, and one thread so that equal inputs give equal bytes and the service's CPU stays
predictable.

What ``quality`` means
----------------------
``quality`` is imagecodecs' lossy ``level``: OpenJPEG's *fixed-quality* target, a PSNR in
dB that OpenJPEG's rate allocator aims for, with the peak taken as the coded components'
full scale, 2**bits - 1 (65535 for uint16, 255 for uint8; for int16 also 65535, as
OpenJPEG ignores the sign). The allocator estimates distortion in the wavelet domain, so
the PSNR it reaches is close to, not exactly, the target: on Sentinel-2 uint16 crops the
measured PSNR against peak 10000 is about ``quality - 16.3`` dB (20 log10(65535/10000)).
Valid values are 1..1000; imagecodecs silently switches to lossless outside that range,
so this module refuses them. In KLT mode ``quality`` keeps this meaning (full scale of the
*input* dtype): the offset between the input's full scale and that of the KLT components
is added before calling OpenJPEG. Use :func:`encode_to_psnr` or :func:`encode_to_size`
for a measured target.

Spectral KLT
------------
With ``klt=True`` the bands are first decorrelated, as JPEG 2000 Part 2's multi-component
transform does: per image, the band means and the eigenvectors of the band covariance
(float64) are fitted, the matrix is rounded to float32 and stored with the means (also
float32) in ``params``, and the mean-removed bands are rotated onto the eigenvectors,
multiplied by ``scale`` = 16 and rounded to signed integers of just enough bits (at most
26, OpenJPEG's practical limit). Because the matrix is orthonormal, squared error in the
coded components is squared error in the original units (times scale**2), which is what
OpenJPEG's equal-weight rate allocation assumes. The 1/16 rounding step adds an error of
MSE 1/3072, far below any lossy operating point. KLT is lossy only: rounding the rotated
bands cannot be undone exactly, so ``klt=True`` with ``lossless=True`` raises InputError.

Accepted input: (bands, height, width) arrays of uint8, int8, uint16 or int16. Floats are
refused (InputError): JPEG 2000 codes integers, and a float quantisation step would be a
codec decision made silently here. 32-bit integers are refused too, because OpenJPEG
keeps at most 26 bits and would not be lossless. Arrays one pixel wide are coded as a
single (bands x height) component, because imagecodecs takes the component count from
the last axis; :func:`decode` restores the shape all the same.

Errors: bad inputs raise :class:`eoz.errors.InputError`; a codestream or params that
cannot be decoded raise :class:`eoz.errors.ContainerError`, as both come from a stored file.

Decoding reads the codestream's SIZ marker first (image and tile size, offsets, component
count, precision and sub-sampling: ISO/IEC 15444-1, A.5.1) and refuses a codestream that
is not the single-tile image its params describe, before OpenJPEG allocates anything: a
few bytes of SIZ can otherwise ask it for gigabytes.
"""

from __future__ import annotations

import json
import math
import struct

import imagecodecs
import numpy as np

from eoz import metrics, spectral
from eoz.errors import ContainerError, InputError

_DTYPES = ("uint8", "int8", "uint16", "int16")
_MAX_BANDS = 4095  # imagecodecs' limit on components
_MAX_BITS = 26  # OpenJPEG's usable sample precision
_KLT_SCALE = 16
_QUALITY_RANGE = (1.0, 1000.0)
_THREADS = 1
SIZE_TOLERANCE = 0.005  # encode_to_size stops within 0.5 % below its byte budget
_SOC_SIZ = b"\xff\x4f\xff\x51"   # start of codestream, then the SIZ marker
# Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, Csiz; then Ssiz, XRsiz, YRsiz per component
_SIZ = struct.Struct(">HHIIIIIIIIH")
_SIZ_COMPONENT = struct.Struct(">BBB")


def params_nbytes(params: dict) -> int:
    """Size of ``params`` as compact JSON: what :func:`encode_to_size` charges for them."""
    return len(json.dumps(params, separators=(",", ":")).encode())


def _validate(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind == "f":
        raise InputError("JPEG 2000 codes integers; float rasters are not accepted")
    if array.dtype.name not in _DTYPES:
        raise InputError(f"dtype {array.dtype} not supported; use one of {', '.join(_DTYPES)}")
    if array.ndim != 3:
        raise InputError(f"expected (bands, height, width), got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"empty array of shape {array.shape}")
    if array.shape[0] > _MAX_BANDS:
        raise InputError(f"{array.shape[0]} bands; JPEG 2000 here takes at most {_MAX_BANDS}")
    return np.ascontiguousarray(array)


def _full_scale(bits: int) -> float:
    return float(2**bits - 1)


def _compact(values: np.ndarray) -> list:
    """float32-rounded values as the shortest decimals that read back to the same float32."""
    rounded = values.astype(np.float32)
    return np.array([float(str(v)) for v in rounded.flat]).reshape(rounded.shape).tolist()


def _klt_arrays(klt: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """Means, matrix (columns = eigenvectors) and scale exactly as the decoder sees them."""
    means = np.asarray(klt["means"], dtype=np.float32).astype(np.float64)
    matrix = np.asarray(klt["matrix"], dtype=np.float32).astype(np.float64)
    scale = float(klt["scale"])
    if means.ndim != 1 or matrix.shape != (means.size, means.size) or not scale > 0:
        raise ValueError("inconsistent KLT parameters")
    return means, matrix, scale


def _fit_klt(array: np.ndarray) -> dict:
    """Band means and covariance eigenvectors, largest variance first, signs fixed."""
    means, vectors = spectral.klt_basis(array)
    return {"means": _compact(means), "matrix": _compact(vectors), "scale": _KLT_SCALE}


def _klt_forward(array: np.ndarray, klt: dict) -> tuple[np.ndarray, int]:
    """Rotated, scaled, rounded bands in the narrowest integer type, and their bit depth."""
    means, matrix, scale = _klt_arrays(klt)
    bands, height, width = array.shape
    pixels = array.reshape(bands, -1).astype(np.float64) - means[:, None]
    coefficients = np.rint(matrix.T @ pixels * scale)
    bits = max(8, int(np.abs(coefficients).max()).bit_length() + 1)
    if bits > _MAX_BITS:
        raise InputError(f"KLT components need {bits} bits; OpenJPEG codes at most {_MAX_BITS}")
    dtype = np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32
    return coefficients.astype(dtype).reshape(bands, height, width), bits


def _klt_inverse(coefficients: np.ndarray, klt: dict, dtype: np.dtype) -> np.ndarray:
    means, matrix, scale = _klt_arrays(klt)
    bands = coefficients.shape[0]
    pixels = matrix @ (coefficients.reshape(bands, -1).astype(np.float64) / scale)
    pixels += means[:, None]
    info = np.iinfo(dtype)
    restored = np.clip(np.rint(pixels), info.min, info.max).astype(dtype)
    return restored.reshape(coefficients.shape)


def _j2k(array: np.ndarray, level: float | None, bits: int) -> bytes:
    """One codestream for all bands; level None means reversible 5/3, bit-exact."""
    planar = array if array.shape[0] > 1 else array[0]
    return imagecodecs.jpeg2k_encode(
        planar,
        level=0 if level is None else level,
        codecformat="J2K",
        planar=True,
        mct=False,
        reversible=level is None,
        bitspersample=bits,
        numthreads=_THREADS,
    )


def encode(
    array: np.ndarray,
    *,
    quality: float | None = None,
    lossless: bool = False,
    klt: bool = False,
) -> tuple[bytes, dict]:
    """Encode (bands, h, w) integers; give either ``quality`` (lossy) or ``lossless=True``.

    Lossy uses the irreversible 9/7 wavelet; lossless the reversible 5/3 and reproduces
    the input bit for bit. Returns the J2K codestream and a JSON-serialisable dict with
    everything :func:`decode` needs (dtype, shape, the KLT if any, and the quality used).
    """
    array = _validate(array)
    if lossless == (quality is not None):
        raise InputError("give either quality (lossy) or lossless=True, not both or neither")
    if lossless and klt:
        raise InputError("the KLT is lossy (rounded rotation); use lossless without klt")
    if quality is not None and not _QUALITY_RANGE[0] <= quality <= _QUALITY_RANGE[1]:
        raise InputError(f"quality must be within {_QUALITY_RANGE}, got {quality}")

    input_bits = array.dtype.itemsize * 8
    params: dict = {
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "quality": None if quality is None else float(quality),
        "klt": None,
    }
    if not klt:
        return _j2k(array, quality, input_bits), params

    params["klt"] = _fit_klt(array)
    coefficients, bits = _klt_forward(array, params["klt"])
    # Keep quality's meaning (PSNR against the input's full scale) for the KLT components.
    offset = 20 * math.log10(_full_scale(bits) / (_KLT_SCALE * _full_scale(input_bits)))
    level = min(max(quality + offset, _QUALITY_RANGE[0]), _QUALITY_RANGE[1])
    return _j2k(coefficients, level, bits), params


def _coded_layout(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(components, height, width) of the codestream that :func:`_j2k` writes for an array
    of ``shape``: imagecodecs codes one band as one component and an array one pixel wide
    as a single (bands x height) component."""
    bands, height, width = shape
    if bands == 1:
        return 1, height, width
    return (1, bands, height) if width == 1 else shape


def _check_siz(codestream: bytes, shape: tuple[int, int, int]) -> None:
    """Refuse a codestream whose SIZ marker is not the one tile of ``shape`` we code."""
    if codestream[:4] != _SOC_SIZ or len(codestream) < 4 + _SIZ.size:
        raise ContainerError("JPEG 2000 codestream does not start with its SOC and SIZ markers")
    length, _, x, y, x0, y0, tile_x, tile_y, tile_x0, tile_y0, components = _SIZ.unpack_from(codestream, 4)
    if length != _SIZ.size + _SIZ_COMPONENT.size * components or len(codestream) < 4 + length:
        raise ContainerError(f"JPEG 2000 SIZ marker segment of {length} bytes does not hold its {components} components")
    expected = _coded_layout(shape)
    if (components, y, x) != expected or (x0, y0, tile_x0, tile_y0) != (0, 0, 0, 0) or tile_x < x or tile_y < y:
        raise ContainerError(
            f"JPEG 2000 codestream's SIZ marker says {components} components of {x} x {y} pixels "
            f"(origin {x0}, {y0}; tiles of {tile_x} x {tile_y} from {tile_x0}, {tile_y0}); its tile "
            f"is {expected[0]} components of {expected[2]} x {expected[1]} pixels in one tile")
    for k in range(components):
        precision, dx, dy = _SIZ_COMPONENT.unpack_from(codestream, 4 + _SIZ.size + _SIZ_COMPONENT.size * k)
        bits = (precision & 0x7F) + 1
        if bits > _MAX_BITS or (dx, dy) != (1, 1):
            raise ContainerError(f"JPEG 2000 SIZ marker gives component {k} {bits} bits and sub-sampling "
                                 f"{dx} x {dy}; we code at most {_MAX_BITS} bits, never sub-sampled")


def decode(codestream: bytes, params: dict) -> np.ndarray:
    """Back to the original dtype and shape, values clipped to the dtype's range."""
    try:
        dtype = np.dtype(params["dtype"])
        shape = tuple(int(n) for n in params["shape"])
        klt = params["klt"]
    except (KeyError, TypeError, ValueError) as error:
        raise ContainerError(f"JPEG 2000 params are incomplete or invalid: {error}") from error
    if dtype.name not in _DTYPES or len(shape) != 3 or min(shape) < 1:
        raise ContainerError(f"JPEG 2000 params name dtype {dtype} and shape {shape}")
    _check_siz(bytes(codestream[:4 + _SIZ.size + _SIZ_COMPONENT.size * shape[0]]), shape)
    try:
        decoded = imagecodecs.jpeg2k_decode(bytes(codestream), planar=True, numthreads=_THREADS)
    except Exception as error:  # imagecodecs raises its own and builtin errors
        raise ContainerError(f"not a decodable JPEG 2000 codestream: {error}") from error
    if decoded.size != math.prod(shape):
        raise ContainerError(f"codestream holds {decoded.shape}, params say {shape}")
    decoded = decoded.reshape(shape)
    if klt is None:
        if decoded.dtype != dtype:
            raise ContainerError(f"codestream holds {decoded.dtype}, params say {dtype}")
        return decoded
    try:
        return _klt_inverse(decoded, klt, dtype)
    except (KeyError, TypeError, ValueError) as error:
        raise ContainerError(f"invalid KLT parameters: {error}") from error


def _search_bounds(array: np.ndarray) -> tuple[float, float]:
    """Quality range worth searching: beyond ~6 dB per bit plus a margin, every bit is kept."""
    bits = array.dtype.itemsize * 8
    return _QUALITY_RANGE[0], 6.03 * bits + 40.0


def encode_to_size(array: np.ndarray, nbytes: int, *, klt: bool = False) -> tuple[bytes, dict]:
    """Largest lossy encoding whose codestream plus compact-JSON params fit in ``nbytes``.

    Bisects ``quality`` to 0.01 dB, stopping early once a fitting encoding is within
    ``SIZE_TOLERANCE`` of the budget (sizes closer than that do not move a figure). When
    even the lowest quality exceeds the budget, that smallest encoding is returned anyway,
    so callers must compare the size themselves.
    """
    array = _validate(array)

    def attempt(quality: float) -> tuple[int, tuple[bytes, dict]]:
        result = encode(array, quality=quality, klt=klt)
        return len(result[0]) + params_nbytes(result[1]), result

    low, high = _search_bounds(array)
    size, best = attempt(high)
    if size <= nbytes:
        return best
    size, result = attempt(low)
    if size > nbytes:
        return result
    best_size, best = size, result
    while high - low > 0.01 and best_size < nbytes * (1 - SIZE_TOLERANCE):
        middle = (low + high) / 2
        size, result = attempt(middle)
        if size <= nbytes:
            low = middle
            if size > best_size:
                best_size, best = size, result
        else:
            high = middle
    return best


def encode_to_psnr(
    array: np.ndarray, target_psnr: float, peak: float, *, klt: bool = False, valid: np.ndarray | None = None
) -> tuple[bytes, dict]:
    """Smallest lossy encoding (codestream plus compact-JSON params) whose decoded PSNR
    against ``peak`` is at least ``target_psnr``, on the samples ``valid`` marks (all where
    None or none: filled nodata, or pixels a mask band calls invalid, are not held to it).

    Starts from the quality that the target PSNR implies, widens the bracket until it
    holds the target, then bisects ``quality`` to 0.01 dB. Raises InputError when even
    the highest lossy quality misses the target (ask for lossless instead).
    """
    array = _validate(array)
    if not math.isfinite(target_psnr):
        raise InputError(f"target PSNR must be finite, got {target_psnr}; use lossless=True")
    bits = array.dtype.itemsize * 8
    floor, ceiling = _search_bounds(array)
    guess = target_psnr + 20 * math.log10(_full_scale(bits) / peak)
    feasible: list[tuple[int, tuple[bytes, dict]]] = []

    held = Ellipsis if valid is None or not valid.any() else valid

    def meets(quality: float) -> bool:
        result = encode(array, quality=quality, klt=klt)
        ok = metrics.psnr(array[held], decode(*result)[held], peak) >= target_psnr
        if ok:
            feasible.append((len(result[0]) + params_nbytes(result[1]), result))
        return ok

    high = min(max(guess + 1.0, floor), ceiling)
    step = 2.0
    while not meets(high):
        if high >= ceiling:
            raise InputError(f"{target_psnr} dB is beyond lossy JPEG 2000 here; use lossless=True")
        high = min(high + step, ceiling)
        step *= 2
    low = min(max(guess - 1.0, floor), high)
    step = 2.0
    while meets(low):
        if low <= floor:
            return min(feasible, key=lambda item: item[0])[1]
        low = max(low - step, floor)
        step *= 2
    while high - low > 0.01:
        middle = (low + high) / 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return min(feasible, key=lambda item: item[0])[1]
