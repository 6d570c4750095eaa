"""Pydantic models of every request and response body, as the OpenAPI document shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, get_args

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eoz.resolve import AUTO, BOUNDS, MAX_ERROR, OPTIONS, given_options
from workers.runner import JobRecord


class S3Source(BaseModel):
    """An object the service may read (EOZ_S3_SOURCES lists the allowed bucket/prefixes)."""

    model_config = ConfigDict(extra="forbid")
    bucket: str = Field(min_length=3, max_length=63, examples=["eoz"])
    key: str = Field(min_length=1, max_length=1024, examples=["incoming/scene.tif"])


class FormNulls(BaseModel):
    """Options a form can send too: a form field has no null, so an empty or 'null' one is null."""

    @model_validator(mode="before")
    @classmethod
    def _form_nulls(cls, data):
        if not isinstance(data, dict):
            return data
        nullable = {name for name, f in cls.model_fields.items() if type(None) in get_args(f.annotation)}
        nullable |= {cls.model_fields[n].alias for n in nullable if cls.model_fields[n].alias}
        return {k: None if k in nullable and v in ("", "null") else v for k, v in data.items()}


def _bounded(name: str, description: str, **field) -> float | None:
    """An option within eoz.resolve's BOUNDS, which the schema shows."""
    low, high = BOUNDS[name]
    lower = {"ge": low} if low > 0 or name == "rate_weight" else {"gt": low}
    return Field(None, **lower, le=high, allow_inf_nan=False, description=description, **field)


class CompressOptions(FormNulls):
    """The model and its options; an option the model's codec cannot honour is refused (422).

    A model of codec jpeg2000 needs exactly one of psnr, quality or lossless; of codec
    hyperprior or spectral-partition one of psnr, mse or lambda; of codec wavelet one of psnr or
    mse; predictive lossless or max_error (neither: lossless); vqvae-fpn takes none of them (GET
    /v1/models lists each model's codec and parameters).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    model: str = Field(AUTO, description="model id from GET /v1/models, jpeg2000, or auto (the default, as on "
                                         "the command line: picked from the raster's bands and dtype among the "
                                         "models that honour every option given; with no quality given, at the "
                                         "picked model's default)", examples=["jpeg2000"])
    version: str | None = Field(None, description="model version; default (or null) the newest")
    psnr: float | None = _bounded("psnr", "target PSNR in dB at the peak")
    mse: float | None = Field(None, gt=0, allow_inf_nan=False,
                              description="target MSE in original units (hyperprior, spectral-partition, "
                                          f"wavelet); at most the PSNR range {BOUNDS['psnr']} dB at the peak "
                                          "allows (peak^2 / 10^(dB / 10))")
    lambda_: float | None = _bounded("lambda", "rate-distortion trade-off (hyperprior, spectral-partition)",
                                     alias="lambda")
    block: int | None = Field(None, gt=0, description="block size of per-block quality control (hyperprior, "
                                                      "spectral-partition, wavelet)")
    open_loop: bool = Field(False, description="quality model only, no closed-loop correction (hyperprior, "
                                               "spectral-partition, wavelet)")
    peak: float | None = _bounded("peak", "PSNR peak of the target and the report; default the model's, else "
                                          "255 for uint8, else 10000 (Sentinel-2 DN); a float raster's psnr "
                                          "needs it unless the model was trained on floats")
    no_band_prediction: bool = Field(False, description="spectral-partition: code every band on its own")
    rate_weight: float | None = _bounded("rate_weight", "vqvae-fpn: choose codes by distance + weight x bits, "
                                                        "for smaller files (about 0.5-3)")
    quality: float | None = _bounded("quality", "jpeg2000: OpenJPEG fixed-quality level in dB")
    lossless: bool = Field(False, description="bit exact: predictive (sha256-checked per tile) or jpeg2000 "
                                              "(reversible 5/3 wavelet)")
    max_error: list[Annotated[float, Field(ge=0, le=MAX_ERROR, allow_inf_nan=False)]] | None = Field(
        None, min_length=1, description="predictive: no sample's error exceeds this, in the data's units (dB for "
                                        "SAR in dB); one value, or one per band; whole numbers for integer rasters")
    fast: bool = Field(False, description="predictive: about twice the speed of encoding and decoding for a few "
                                          "per cent more bytes (no learned correction, no band-order trial); lossless "
                                          "unless max_error")
    klt: bool = Field(False, description="jpeg2000: spectral KLT across bands first")
    tile_size: int | None = Field(None, ge=64, le=4096, multiple_of=64,
                                  description="tile edge in pixels; default 512, smaller for many bands so that "
                                              "a tile stays within the decode limits")

    def codec_options(self) -> dict:
        """The options given, by their eoz.resolve names (flags left off are no option; an option
        this API does not offer is never given)."""
        fields = {"lambda_" if name == "lambda" else name: name for name in OPTIONS}
        return given_options({name: getattr(self, field) for field, name in fields.items()
                              if field in type(self).model_fields})


class CompressUpload(CompressOptions):
    """multipart/form-data form of POST /v1/compress."""

    file: UploadFile = Field(description="the GeoTIFF to compress")


class CompressRequest(CompressOptions):
    """application/json form of POST /v1/compress."""

    source: S3Source


Window = list[int]


class DecompressOptions(FormNulls):
    model_config = ConfigDict(extra="forbid")
    format: Literal["geotiff", "cog"] = Field("geotiff", description="cog: Cloud-Optimized GeoTIFF")
    window: Window | None = Field(
        None, description="col_off, row_off, width, height in pixels of the image (in a form: the field "
                          "repeated four times, or once with the four comma-separated)",
        examples=[[0, 0, 256, 256]])

    @field_validator("window", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            try:
                return [int(v) for v in value.split(",")]
            except ValueError:
                raise ValueError("window is four integers: col_off,row_off,width,height") from None
        return value

    @field_validator("window")
    @classmethod
    def _four(cls, value):
        if value is not None and (len(value) != 4 or min(value[:2]) < 0 or min(value[2:]) < 1):
            raise ValueError("window is four integers: col_off >= 0, row_off >= 0, width >= 1, height >= 1")
        return value


class DecompressUpload(DecompressOptions):
    """multipart/form-data form of POST /v1/decompress."""

    file: UploadFile = Field(description="the .eoz file to decode")


class DecompressRequest(DecompressOptions):
    """application/json form of POST /v1/decompress."""

    source: S3Source


class FeaturesOptions(FormNulls):
    """Which VQVAE-FPN model's top level to export, and whether as codebook vectors."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="a vqvae-fpn model id from GET /v1/models", examples=["vqvae-fpn-s2-10m"])
    version: str | None = Field(None, description="model version; default (or null) the newest")
    quantized: bool = Field(True, description="codebook vectors (what a .eoz file holds) or the encoder's "
                                              "continuous features")
    tile_size: int = Field(512, ge=64, le=4096, multiple_of=64, description="tile edge in pixels")


class FeaturesUpload(FeaturesOptions):
    """multipart/form-data form of POST /v1/features."""

    file: UploadFile = Field(description="the GeoTIFF whose latents to export")


class FeaturesRequest(FeaturesOptions):
    """application/json form of POST /v1/features."""

    source: S3Source


class JobResult(BaseModel):
    """What a finished job produced and measured (compress: ratio and quality; decompress: format;
    features: the latent raster)."""

    key: str = Field(description="object store key of the result")
    bytes: int
    input_bytes: int
    width: int
    height: int
    bands: list[str]
    dtype: str
    codec_seconds: float
    model_id: str | None = Field(None, description="compress: the model that coded it (model auto: the pick)")
    picked: str | None = Field(None, description="compress with model auto: which model it picked, and why")
    model_version: str | None = None
    raw_bytes: int | None = None
    compression_ratio: float | None = Field(None, description="raw array bytes / .eoz bytes")
    bpp_per_band: float | None = None
    mse: float | None = None
    psnr: float | None = Field(None, description="dB at psnr_peak; null when the reconstruction is exact")
    psnr_peak: float | None = None
    tiles: int | None = None
    weights_sha256: str | None = None
    format: Literal["geotiff", "cog"] | None = None
    window: Window | None = None
    quantized: bool | None = Field(None, description="features: codebook vectors or continuous features")


class Job(BaseModel):
    id: str
    status: Literal["queued", "running", "finished", "failed", "canceled"]
    status_url: str
    result_url: str
    kind: Literal["compress", "decompress", "features"]
    model: str | None
    queue: str
    progress: float = Field(ge=0, le=1)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: JobResult | None
    error: str | None = Field(description="why the job failed")

    @classmethod
    def from_record(cls, record: JobRecord, status_url: str) -> Job:
        return cls(id=record.id, status=record.status, status_url=status_url,
                   result_url=f"{status_url}/result", kind=record.kind, model=record.model,
                   queue=record.queue, progress=record.progress, created_at=record.created_at,
                   started_at=record.started_at, finished_at=record.finished_at,
                   result=record.result, error=record.error)


class JobList(BaseModel):
    """A page of the caller's jobs, newest first."""

    jobs: list[Job]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: no more")


class ModelInfo(BaseModel):
    model_id: str
    version: str | None
    codec: str
    description: str
    bands: list[str] | None = Field(description="bands the model expects, in order; null = any")
    parameters: list[str] = Field(description="quality parameters it takes")
    queue: str = Field(description="the queue its jobs go to (gpu: learned codecs)")
    dtype: str | list[str] | None = Field(None, description="the raster dtype(s) it takes; null = any")
    weights_sha256: str | None = None
    codebook_sha256: list[str] = []
    validation: dict = {}


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description="queue and store: ok, or unavailable (the service log says why)")


class Problem(BaseModel):
    """RFC 7807 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict] | None = Field(None, description="per-field validation errors")
