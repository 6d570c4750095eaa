"""Model choice + user options + raster metadata -> what runs: one ``resolve()`` for all callers.

The CLI, the API (when a request arrives) and the jobs (when they run) all call it, so the
rules live once: which options each codec honours (``CAPABILITIES``, one row per codec),
what ``auto`` picks, which bands and dtype a model takes, the PSNR peak and the queue. An
option the chosen codec cannot honour is refused, never dropped: a ``--lossless`` that a
VQ model quietly ignored would lose an archive's data. Torch-free, so the API checks a
request without loading a network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from eoz.errors import InputError, UnknownModelError
from eoz.quality import LAMBDA_MAX_LOG2, LAMBDA_MIN_LOG2, QualityTarget
from eoz.raster import RasterMeta
from eoz.registry import ModelEntry, ModelStore

AUTO, JPEG2000 = "auto", "jpeg2000"
S2_PEAK = 10000.0
GPU_QUEUE, CPU_QUEUE = "gpu", "cpu"
QUEUES = (GPU_QUEUE, CPU_QUEUE)
# Every option a user can give (CLI flag = "--" + name with "-" for "_"); flags are off unless given.
OPTIONS = ("psnr", "mse", "lambda", "block", "peak", "open_loop", "quality", "lossless", "klt",
           "rate_weight", "no_band_prediction", "max_error", "fast")
COMMON = ("peak",)                    # every codec takes it: PSNR figures are stated at the peak
TARGETS = ("psnr", "mse", "lambda")   # a quality target: auto then prefers a fixed-quality model
BOUNDED = ("lossless", "max_error", "fast")   # what only the predictive codec (and jpeg2000's lossless) is for
QUALITIES = TARGETS + ("quality", "lossless")  # one of these sets the quality; auto adds a default without
# Auto's operating point for a model that needs a quality when none is given (a manifest may state its
# own as "default_quality"): the wavelet model at 50 dB holds every block of S2 10 m at or above 50 dB at
# a ratio of about 13 (benchmarks/results/fixed_quality_wavelet.md); the hyperpriors' learned range ends
# near 40 dB (their manifests' validation), the spectral partition's is measured at 40 to 50 dB.
DEFAULT_QUALITY = {"wavelet": {"psnr": 50.0}, "hyperprior": {"psnr": 40.0},
                   "spectral-partition": {"psnr": 45.0}, "jpeg2000": {"psnr": 50.0}}
# What a request may ask for, checked before anything runs (the API's schema shows the same numbers).
# PSNR: below 1 dB nothing of the image is left; above 150 dB the error is under 3e-8 of the peak,
# finer than float32 resolves: only lossless gets there. An MSE is held to the same range at the
# peak. quality: OpenJPEG's levels (outside them imagecodecs silently codes lossless). peak: up to
# float32's largest value, so that peak^2 stays finite.
BOUNDS = {"psnr": (1.0, 150.0), "quality": (1.0, 1000.0), "rate_weight": (0.0, 100.0),
          "lambda": (2 ** LAMBDA_MIN_LOG2, 2 ** LAMBDA_MAX_LOG2), "peak": (0.0, 3.4e38)}
JPEG2000_DTYPES = ("uint8", "int8", "uint16", "int16")  # what OpenJPEG codes losslessly here (eoz/jpeg2000.py)
MAX_ERROR = 2.0 ** 31   # a bound past the widest integer sample is no bound
# the predictive codec's --fast encodes up to this many times as fast as its default (2.46x at most against
# the default in the same run in session 13, 2.2x in session 14's and 2.1x in session 15's runs of
# benchmarks/lossless.py): its speed bound for fast jobs
FAST_SPEEDUP = 2.5


def _flag(option: str) -> str:
    """An option as the API names it and as the CLI flag, for messages both kinds of user read."""
    return f"{option} (--{option.replace('_', '-')})"


def _target(given: dict, peak: float) -> dict:
    return {"target": QualityTarget(psnr=given.get("psnr"), mse=given.get("mse"), lmbda=given.get("lambda"),
                                    block=given.get("block"), peak=peak, closed_loop=not given.get("open_loop"))}


def _partition(given: dict, peak: float) -> dict:
    return {**_target(given, peak), "predict_bands": not given.get("no_band_prediction")}


def _vq(given: dict, peak: float) -> dict:
    return {"rate_weight": given["rate_weight"]} if "rate_weight" in given else {}


def _jpeg2000(given: dict, peak: float) -> dict:
    """One mode exactly: OpenJPEG would otherwise let one of psnr, quality, lossless win silently."""
    modes = [m for m in ("psnr", "quality", "lossless") if m in given]
    if not modes:
        raise InputError(f"jpeg2000 needs one of {_flag('psnr')}, {_flag('quality')} or {_flag('lossless')}: "
                         "a target PSNR at the peak, OpenJPEG's fixed-quality level, or bit exact")
    if len(modes) > 1:
        raise InputError(f"jpeg2000 takes one of psnr, quality or lossless, not {' and '.join(map(_flag, modes))}")
    if "lossless" in given and "klt" in given:
        raise InputError("jpeg2000 cannot honour klt (--klt) with lossless (--lossless): the KLT is a rounded, "
                         "lossy rotation")
    return {"quality": given.get("quality"), "lossless": "lossless" in given, "klt": "klt" in given,
            "target_psnr": given.get("psnr"), "peak": peak}


def _bounded(given: dict, peak: float) -> dict:
    """Lossless, or a hard bound per sample: one value for every band or one per band."""
    errors = given.get("max_error")
    if errors is not None:
        errors = [float(e) for e in (errors if isinstance(errors, (list, tuple)) else [errors])]
        if not errors or not all(math.isfinite(e) and 0 <= e <= MAX_ERROR for e in errors):
            raise InputError(f"max_error must be one or more numbers between 0 and {MAX_ERROR:.0f}, not {errors}")
    return {"lossless": given.get("lossless"), "max_error": errors, "fast": given.get("fast")}


@dataclass(frozen=True)
class Capability:
    options: tuple[str, ...]              # what the codec honours, besides COMMON
    queue: str                            # gpu: learned networks; cpu: numpy codecs
    kwargs: Callable[[dict, float], dict]  # (given options, peak) -> codec_for_model keyword arguments
    cpu_samples_per_second: float | None = None  # encode speed measured on 2 CPU cores; None: not measured


_FIXED_QUALITY = ("psnr", "mse", "lambda", "block", "open_loop")
CAPABILITIES = {
    # speeds (pixels x bands per second; each CPU codec's fastest measured encode, so that
    # cpu_seconds is a lower bound): benchmarks/results/scene.md (OpenJPEG), throughput.md
    # (vqvae-fpn, file to file), throughput_wavelet.md (wavelet, one target per tile),
    # lossless.md (predictive)
    JPEG2000: Capability(("psnr", "quality", "lossless", "klt"), CPU_QUEUE, _jpeg2000, 4.7e6),
    "vqvae-fpn": Capability(("rate_weight",), GPU_QUEUE, _vq, 3.0e6),
    "hyperprior": Capability(_FIXED_QUALITY, GPU_QUEUE, _target),
    "spectral-partition": Capability(_FIXED_QUALITY + ("no_band_prediction",), GPU_QUEUE, _partition),
    "wavelet": Capability(("psnr", "mse", "block", "open_loop"), CPU_QUEUE, _target, 8.0e6),
    "predictive": Capability(("lossless", "max_error", "fast"), CPU_QUEUE, _bounded, 4.3e6),
}


# JPEG 2000 needs no model; an entry that takes any raster keeps it under the same rules
JPEG2000_ENTRY = ModelEntry(JPEG2000, None, Path(), {"codec": JPEG2000, "bands": [], "dtype": JPEG2000_DTYPES})


@dataclass(frozen=True)
class Resolved:
    model_id: str
    version: str | None        # None for jpeg2000, which has no versions
    codec_id: str
    codec_kwargs: dict
    peak: float
    queue: str
    reason: str | None = None  # auto: which model it picked, and why
    defaults: dict = field(default_factory=dict)  # auto: the quality it added (the model's default)

    def codec(self):
        """The codec to run; loads the model (and torch, for the learned networks)."""
        from eoz.codecs import codec_for_model

        if self.model_id == AUTO:
            raise InputError("model auto is picked from the raster: resolve it with the raster's metadata")
        return codec_for_model(self.model_id, self.version, **self.codec_kwargs)


def queue_for(codec: str) -> str:
    return CAPABILITIES[codec].queue if codec in CAPABILITIES else GPU_QUEUE


def honoured(codec: str) -> tuple[str, ...]:
    """The options a codec honours, as the model catalogue lists them (the common peak aside)."""
    return CAPABILITIES[codec].options if codec in CAPABILITIES else ()


def psnr_peak(dtype: str | None, stated: float | None = None) -> float:
    """The peak PSNR is stated at (DESIGN.md, Metrics), for the target and the report alike:
    the user's or the model's, else 255 for bytes, else 10000 (Sentinel-2 digital numbers)."""
    peak = float(stated) if stated is not None else 255.0 if dtype == "uint8" else S2_PEAK
    if not (peak > 0 and math.isfinite(peak)):
        raise InputError(f"peak must be a positive number, not {peak}")
    return peak


def given_options(options: dict) -> dict:
    """The options actually given: a None value or an unset flag is no option."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"unknown option(s) {unknown}; the options are {list(OPTIONS)}")
    return {k: v for k, v in options.items() if v is not None and v is not False}


def _check_bounds(given: dict) -> None:
    for name, (low, high) in BOUNDS.items():
        value = given.get(name)
        if value is not None and not (low <= value <= high and (value > 0 or name == "rate_weight")):
            raise InputError(f"{name} must lie between {low:g} and {high:g}, not {value}")


def _check_mse(mse: float | None, peak: float) -> None:
    """A target MSE, held to the PSNR range at the peak."""
    low, high = (peak * peak / 10 ** (db / 10) for db in reversed(BOUNDS["psnr"]))
    if mse is not None and not low <= mse <= high:
        raise InputError(f"mse must lie between {low:.3g} and {high:.3g} at peak {peak:g} "
                         f"(PSNR {BOUNDS['psnr'][0]:g} to {BOUNDS['psnr'][1]:g} dB), not {mse}")


def resolve(model: str, version: str | None = None, options: dict | None = None,
            meta: RasterMeta | None = None, codecs: tuple[str, ...] = tuple(CAPABILITIES)) -> Resolved:
    """The concrete model, version, codec arguments, peak and queue for a request.

    ``model`` is a model id, ``jpeg2000`` or ``auto`` (which needs ``meta``); ``meta`` is
    None where the raster is not known yet (an S3 source before its job runs), and then
    the band and dtype checks wait for the job's own call. ``codecs``: those the caller
    can use (features export takes vqvae-fpn only).
    """
    store = ModelStore()
    given = given_options(options or {})
    if version is not None and model in (AUTO, JPEG2000):
        raise InputError(f"model {model} takes no version" + (" (it picks the newest)" if model == AUTO else ""))
    if model == AUTO and meta is None:
        return _deferred_auto(given, codecs)
    entry, reason = _auto(given, meta, store, codecs) if model == AUTO else (
        JPEG2000_ENTRY if model == JPEG2000 else store.get(model, version), None)
    codec = entry.codec
    capability = CAPABILITIES.get(codec)
    label = f"model {entry.model_id!r} (codec {codec})"
    if capability is None:
        raise InputError(f"{label}: this build cannot run that codec")
    if codec not in codecs:
        raise InputError(f"{label} cannot serve here: this needs a model of codec {' or '.join(codecs)}")
    refused = [o for o in given if o not in capability.options + COMMON]
    if refused:
        raise InputError(f"{label} cannot honour " + "; ".join(_takers(o, store) for o in refused))
    _check_bounds(given)
    if meta is not None:
        _check_fits(entry, meta, store)
    peak = psnr_peak(meta.dtype if meta else None, given.get("peak", entry.manifest.get("peak")))
    defaults = default_quality(entry) if model == AUTO and not set(QUALITIES) & set(given) else {}
    if defaults:
        stated = " ".join(f"--{k} {v:g}" for k, v in defaults.items())
        reason += f"; no quality target given: its default {stated} at peak {peak:g}"
        given = {**given, **defaults}
    _check_mse(given.get("mse"), peak)
    _check_float_peak(given, meta, entry)
    return Resolved(entry.model_id, entry.version, codec, capability.kwargs(given, peak), peak,
                    capability.queue, reason, defaults)


def _check_float_peak(given: dict, meta: RasterMeta | None, entry: ModelEntry) -> None:
    """Refuse a PSNR target on a float raster at a peak nobody stated for floats: reflectance or
    dB at Sentinel-2's 10000 would ask for an error larger than the data. A model trained on
    that dtype states its peak (Sentinel-1 dB's 50); a model for any dtype states Sentinel-2's."""
    if not _float_psnr_without_peak(given, meta):
        return
    if "peak" not in entry.manifest or meta.dtype not in (entry.dtypes or ()):
        raise InputError(f"a {meta.dtype} raster has no natural PSNR peak, and {entry.model_id!r} would take "
                         f"Sentinel-2's {S2_PEAK:g}: state peak (e.g. the data's range) or give mse in the "
                         "data's units")


def _float_psnr_without_peak(given: dict, meta: RasterMeta | None) -> bool:
    return "psnr" in given and "peak" not in given and meta is not None and meta.dtype.startswith("float")


def default_quality(entry: ModelEntry) -> dict:
    """The operating point auto uses for this model when given no quality: its manifest's
    ``default_quality``, else its codec's (DEFAULT_QUALITY); empty for a codec that needs none."""
    return dict(entry.manifest.get("default_quality") or DEFAULT_QUALITY.get(entry.codec, {}))


def _honouring(given: dict, usable: tuple[str, ...]) -> list[str]:
    """The codecs that honour every option given (the peak aside, which all take)."""
    codecs = [c for c in usable if set(given) <= set(CAPABILITIES[c].options + COMMON)]
    if not codecs:
        raise InputError(f"no codec honours {', '.join(given)} together")
    return codecs


def _deferred_auto(given: dict, usable: tuple[str, ...]) -> Resolved:
    """``auto`` before the raster is known (an S3 source, read by the job): the options are
    checked now, the pick is the job's. Its queue: cpu when every codec that could be picked
    runs there, else gpu (a gpu worker runs the others too)."""
    codecs = _honouring(given, usable)
    _check_bounds(given)
    queue = CPU_QUEUE if all(queue_for(c) == CPU_QUEUE for c in codecs) else GPU_QUEUE
    return Resolved(AUTO, None, AUTO, {}, psnr_peak(None, given.get("peak")), queue,
                    "picked when the job reads the raster's bands and dtype")


def _takers(option: str, store: ModelStore) -> str:
    """An option, and the codecs and models that take it, for the error that refuses it."""
    codecs = [c for c, cap in CAPABILITIES.items() if option in cap.options]
    models = [JPEG2000] * (JPEG2000 in codecs) + [e.model_id for e in store.newest() if e.codec in codecs]
    return (f"{_flag(option)}, which codec {' / '.join(codecs)} takes "
            f"(models: {', '.join(models) or 'none in the store'})")


def _takes(entry: ModelEntry, meta: RasterMeta) -> bool:
    return (not entry.bands or meta.count == len(entry.bands)) and (entry.dtypes is None or meta.dtype in entry.dtypes)


def _check_fits(entry: ModelEntry, meta: RasterMeta, store: ModelStore) -> None:
    """Refuse a raster the model was not trained for (bands, dtype), naming the models that take it."""
    if _takes(entry, meta):
        return
    takers = [e.model_id for e in (JPEG2000_ENTRY, *store.newest()) if _takes(e, meta)]
    if entry.bands and meta.count != len(entry.bands):
        why = f"expects {len(entry.bands)} bands {entry.bands}; the raster has {meta.count} {meta.band_names}"
    else:
        taken = ", ".join(entry.dtypes)
        why = (f"takes {taken} rasters (what OpenJPEG codes exactly here)" if entry is JPEG2000_ENTRY
               else f"was trained on {taken} rasters and takes only those") + f"; the raster is {meta.dtype}"
    raise InputError(f"model {entry.model_id!r} {why}; models that take it: {', '.join(takers) or 'none'}")


def cpu_seconds(resolved: Resolved, meta: RasterMeta) -> float | None:
    """A lower bound of the seconds the encode takes on CPU: pixels x bands at the codec's measured speed."""
    speed = CAPABILITIES[resolved.codec_id].cpu_samples_per_second
    if speed is not None and resolved.codec_kwargs.get("fast"):
        speed *= FAST_SPEEDUP
    return None if speed is None else meta.height * meta.width * meta.count / speed


def check_cpu_work(resolved: Resolved, meta: RasterMeta, limit_seconds: float) -> None:
    """Refuse a job that would hold a CPU worker longer than the limit (one embedded worker
    serves every job in turn: a 20000 x 20000 x 4 VQ encode would block it for about 9 minutes)."""
    seconds = cpu_seconds(resolved, meta)
    if seconds is not None and seconds > limit_seconds:
        raise InputError(f"{meta.height} x {meta.width} x {meta.count} through {resolved.model_id} would take "
                         f"about {seconds:.0f} s on CPU (codec {resolved.codec_id} at its measured speed); the "
                         f"limit is {limit_seconds:g} s (EOZ_MAX_CPU_SECONDS): send a smaller raster, "
                         "use a faster model, or a GPU worker")


class _Honouring(ModelStore):
    """The store as auto sees it: only the models whose codec honours every option given."""

    def __init__(self, store: ModelStore, codecs: list[str]):
        super().__init__(store.root)
        self.codecs = codecs

    def newest(self) -> list[ModelEntry]:
        return [e for e in super().newest() if e.codec in self.codecs]


def _auto(given: dict, meta: RasterMeta, store: ModelStore,
          usable: tuple[str, ...]) -> tuple[ModelEntry, str]:
    """``auto``: among the codecs that honour every option given, a VQ model without a quality
    target and a fixed-quality one with it, fitted to the raster (for a float raster's PSNR
    without a peak, one trained on its dtype, which states one); the predictive model for
    lossless or a bound; JPEG 2000 when only it can, or when no model fits."""
    codecs = _honouring(given, usable)
    if codecs == [JPEG2000]:
        return JPEG2000_ENTRY, f"jpeg2000: it alone honours {', '.join(o for o in given if o not in COMMON)}"
    # with a PSNR or MSE target the wavelet model (measured ahead on every sensor:
    # benchmarks/results/rd_sensors_wavelet.md) wins over the older hyperpriors; lossless
    # and bounded error go to the predictive model (benchmarks/results/lossless.md)
    asked = set(given) - set(COMMON)
    preferred = ("hyperprior" if "lambda" in given else "wavelet") if set(TARGETS) & asked else \
        "predictive" if set(BOUNDED) & asked else "vqvae-fpn"
    if preferred == "wavelet" and _float_psnr_without_peak(given, meta):
        preferred = None   # the wavelet model's peak is Sentinel-2's: a model of the raster's dtype states its own
    if not set(BOUNDED) & asked:   # unasked, the predictive codec would code lossless: ratios of 2, not 20
        codecs = [c for c in codecs if c != "predictive"]
    try:
        entry, why = _Honouring(store, codecs).pick(meta.band_names, meta.dtype, preferred)
    except UnknownModelError:   # JPEG 2000, if it honours the options and takes the raster
        asked_for = f" and honours {', '.join(map(_flag, asked))}" if asked else ""
        if JPEG2000 not in codecs or not _takes(JPEG2000_ENTRY, meta):
            takers = [e.model_id for e in (JPEG2000_ENTRY, *store.newest()) if _takes(e, meta)]
            raise UnknownModelError(f"no model fits a {_raster(meta)}{asked_for}; models that take the raster: "
                                    f"{', '.join(takers) or 'none'}") from None
        return JPEG2000_ENTRY, f"jpeg2000: no model in the store fits the raster{asked_for}"
    if preferred and entry.codec != preferred:
        why = f"no {preferred} model takes a {_raster(meta)}; {why}"
    return entry, f"{entry.model_id} version {entry.version}: {why}"


def _raster(meta: RasterMeta) -> str:
    return f"{meta.count}-band {meta.dtype} raster"
