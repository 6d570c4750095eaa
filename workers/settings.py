"""Service configuration, read once from the environment by the API and by every worker.

| variable | default | meaning |
|---|---|---|
| EOZ_DATA_DIR | ./eoz-data | filesystem object store (without S3), scratch files, model cache |
| REDIS_URL | unset | set: jobs go to RQ queues served by `eoz worker`; unset: in-process threads |
| EOZ_WORKERS | 1 | threads of the in-process runner |
| EOZ_TILE_THREADS | 1 | tiles a job codes at once (predictive, wavelet, jpeg2000; 0: one per CPU core) |
| EOZ_S3_ENDPOINT | unset | S3 API endpoint (MinIO, moto); unset with a bucket = AWS itself |
| EOZ_S3_PUBLIC_ENDPOINT | EOZ_S3_ENDPOINT | host presigned result URLs name (clients may reach S3 elsewhere) |
| EOZ_S3_BUCKET | unset | set: the object store is this bucket (credentials from the AWS_* variables) |
| EOZ_S3_SOURCES | EOZ_S3_BUCKET/incoming/ | comma-separated `bucket/prefix` that S3-key sources may name |
| EOZ_API_KEYS | unset | comma-separated keys; unset = no authentication; set without a key: refused |
| EOZ_MAX_UPLOAD_BYTES | 2 GiB | largest upload or S3 source object |
| EOZ_MAX_PIXELS | 20000 * 20000 | largest raster (height x width) |
| EOZ_MAX_BANDS | 512 | most bands in a raster |
| EOZ_JOB_TIMEOUT | 3600 | seconds one job may run before it is stopped and failed (embedded and RQ) |
| EOZ_RETENTION_DAYS | 7 | days uploads, results and ended job records are kept |
| EOZ_MAX_CPU_SECONDS | 900 | longest encode a job may ask of a CPU worker, estimated from the codec's measured speed |
| EOZ_HEARTBEAT_SECONDS | 10 | RQ worker heartbeat; a job whose worker misses 3 is re-run elsewhere |
| EOZ_MODEL_STORE | the repository's model_store/ | local model store (read by eoz.registry) |
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from eoz.raster import Limits

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    # An empty variable (VAR= in compose files) means unset, not an invalid value.
    model_config = SettingsConfigDict(env_prefix="EOZ_", env_ignore_empty=True, frozen=True)

    data_dir: Path = Path("eoz-data")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    workers: int = Field(1, ge=1)
    tile_threads: int = Field(1, ge=0)
    s3_endpoint: str | None = None
    s3_public_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_sources: CommaList = []
    api_keys: CommaList = []
    max_upload_bytes: int = Field(2 * 2**30, ge=1)
    max_pixels: int = Field(20_000 * 20_000, ge=1)
    max_bands: int = Field(512, ge=1)
    job_timeout: int = Field(3600, ge=1)
    retention_days: float = Field(7, gt=0)
    heartbeat_seconds: int = Field(10, ge=1)
    max_cpu_seconds: float = Field(900, gt=0)

    @field_validator("s3_sources", "api_keys", mode="before")
    @classmethod
    def _split_commas(cls, value, info):
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",") if item.strip()]
            if info.field_name == "api_keys" and not items:  # " , " must not open the service
                raise ValueError("EOZ_API_KEYS is set but names no usable key: give comma-separated "
                                 "keys, or unset it for an open service")
            return items
        return value

    @cached_property
    def limits(self) -> Limits:
        return Limits(max_pixels=self.max_pixels, max_bands=self.max_bands)

    @property
    def allowed_sources(self) -> list[tuple[str, str]]:
        """(bucket, key prefix) pairs S3-key sources must fall under."""
        entries = self.s3_sources or ([f"{self.s3_bucket}/incoming/"] if self.s3_bucket else [])
        return [(bucket, prefix) for bucket, _, prefix in (e.partition("/") for e in entries)]

    @property
    def retention_seconds(self) -> int:
        return round(self.retention_days * 24 * 3600)

    @property
    def scratch_dir(self) -> Path:
        """Local working files of uploads and jobs; removed when each is done."""
        return self.data_dir / "scratch"

    @property
    def model_cache_dir(self) -> Path:
        """Model versions fetched back from the object store to decode older files."""
        return self.data_dir / "model-cache"
