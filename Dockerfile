# syntax=docker/dockerfile:1
#
# eoz images. Three targets from one file (BuildKit, the default builder of current Docker):
#
#   docker build --target api        -t eoz/api:dev .         CPU torch; `eoz serve` on :8000
#   docker build --target worker     -t eoz/worker:dev .      same layers; `eoz worker --queues gpu,cpu`
#   docker build --target gpu-worker -t eoz/gpu-worker:dev .  CUDA torch; `eoz worker --queues gpu`
#
# A plain `docker build .` builds the last stage, `api`.
#
# Why torch is installed on its own, before everything else: torch==2.13.0 from PyPI is the
# multi-GB CUDA build. The CPU image takes the pinned CPU wheel from PyTorch's CPU index; the
# GPU image takes the same version from PyTorch's CUDA index (TORCH_CUDA_INDEX_URL). The CUDA
# wheels carry the CUDA runtime, cuDNN, cuBLAS... as nvidia-* pip packages, so the GPU image
# needs no nvidia/cuda base: only the host's NVIDIA driver, which the NVIDIA container
# toolkit (Docker `--gpus`, Kubernetes device plugin) mounts in at run time. The driver must
# be new enough for the chosen CUDA version (CUDA 12.8: driver >= 570).
#
# Layer order, slowest-changing first: torch (depends only on the build args), the other
# dependencies (only on the dependency lists in pyproject.toml), then the eoz wheel built
# from the source, then model_store/. Editing code rebuilds only the last, small layers.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
# Check the CUDA variants published for TORCH_VERSION on pytorch.org ("previous versions")
# and pick one your GPU nodes' driver supports, e.g. .../whl/cu126, .../whl/cu128, .../whl/cu130.
ARG TORCH_CUDA_INDEX_URL=https://download.pytorch.org/whl/cu128
# Optional-dependency groups of pyproject.toml installed into each image (comma-separated).
ARG CPU_EXTRAS=""
ARG GPU_EXTRAS="gpu"


# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1


# --- dependency lists, read from pyproject.toml alone --------------------------------------
# Only the [project] dependencies (plus the named extras) are written out, so a change to
# pyproject.toml that leaves them alone does not invalidate the dependency layers. No [dev]
# extra: pytest, hypothesis and matplotlib stay out of the images.
FROM python-base AS requirements
ARG CPU_EXTRAS
ARG GPU_EXTRAS
WORKDIR /src
COPY pyproject.toml ./
RUN mkdir /out && python - "${CPU_EXTRAS}" "${GPU_EXTRAS}" <<'EOF'
import sys, tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
optional = project.get("optional-dependencies", {})
for variant, extras in zip(("cpu", "gpu"), sys.argv[1:]):
    deps = list(project.get("dependencies", []))
    for extra in filter(None, (e.strip() for e in extras.split(","))):
        deps += optional[extra]
    with open(f"/out/requirements-{variant}.txt", "w") as out:
        out.write("\n".join(deps) + "\n")
    print(variant, deps)
EOF


# --- CPU virtual environment ------------------------------------------------------------------
FROM python-base AS deps-cpu
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX_URL
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CPU_INDEX_URL}"
# torch==X in the list is already met by X+cpu (a local version label), so pip keeps it.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=requirements,source=/out,target=/req \
    pip install -r /req/requirements-cpu.txt \
 && python -c "import torch; assert torch.version.cuda is None, torch.__version__; print('torch', torch.__version__)"


# --- CUDA virtual environment -----------------------------------------------------------------
FROM python-base AS deps-gpu
ARG TORCH_VERSION
ARG TORCH_CUDA_INDEX_URL
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CUDA_INDEX_URL}"
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=requirements,source=/out,target=/req \
    pip install -r /req/requirements-gpu.txt \
 && python -c "import torch; assert torch.version.cuda, torch.__version__; print('torch', torch.__version__, 'cuda', torch.version.cuda)"


# --- the eoz wheel (packages eoz, app, workers; console script `eoz`) ---------------------------
# .dockerignore lets only the files the wheel needs into the context.
FROM python-base AS wheel
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir /wheels .


# --- what every runtime image has -------------------------------------------------------------
FROM python-base AS runtime-base
# tini as PID 1: forwards SIGTERM to eoz (a warm worker shutdown finishes its current job)
# and reaps any child processes. (Unpinned: the Debian release of the base image pins it.)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 eoz \
 && useradd --system --uid 10001 --gid eoz --home-dir /home/eoz --create-home \
        --shell /usr/sbin/nologin eoz \
 && install -d -o eoz -g eoz -m 0750 /var/lib/eoz
# EOZ_MODEL_STORE is set explicitly: the library's default (next to the installed package)
# points into site-packages once eoz is installed as a wheel.
ENV PATH=/opt/venv/bin:$PATH \
    EOZ_DATA_DIR=/var/lib/eoz \
    EOZ_MODEL_STORE=/opt/eoz/model_store
WORKDIR /home/eoz
LABEL org.opencontainers.image.title="eoz" \
      org.opencontainers.image.description="Ground-segment compression service for Earth-observation rasters"
ENTRYPOINT ["/usr/bin/tini", "--"]


# --- CPU runtime: api and worker ---------------------------------------------------------------
FROM runtime-base AS cpu-runtime
COPY --from=deps-cpu /opt/venv /opt/venv
RUN --mount=type=bind,from=wheel,source=/wheels,target=/tmp/wheels \
    pip install --no-deps --no-index --no-cache-dir /tmp/wheels/*.whl
# Owned by root, read-only to the service user: weights are pinned by sha256 and never written.
COPY model_store /opt/eoz/model_store
USER 10001:10001


# --- GPU worker --------------------------------------------------------------------------------
FROM runtime-base AS gpu-worker
COPY --from=deps-gpu /opt/venv /opt/venv
RUN --mount=type=bind,from=wheel,source=/wheels,target=/tmp/wheels \
    pip install --no-deps --no-index --no-cache-dir /tmp/wheels/*.whl
COPY model_store /opt/eoz/model_store
# Lets nvidia-smi work in the container; which GPUs are visible is left to the runtime
# (never NVIDIA_VISIBLE_DEVICES=all in an image: it would hand every GPU to any pod).
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
CMD ["eoz", "worker", "--queues", "gpu"]


# --- CPU worker: the api image's layers, another command, no HTTP health check -------------------
FROM cpu-runtime AS worker
CMD ["eoz", "worker", "--queues", "gpu,cpu"]


# --- API (default target) ------------------------------------------------------------------------
FROM cpu-runtime AS api
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["eoz", "serve", "--host", "0.0.0.0", "--port", "8000"]
