"""What every benchmark report carries: the command that reproduces it, the machine, the files.

Kept beside the scripts (run as ``python benchmarks/<script>.py``), so a figure always
comes with what is needed to measure it again and to judge it.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import imagecodecs
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
# Environment variables that change what a benchmark measures, so the command must show them.
_ENV_KEYS = ("EOZ_MODEL_STORE", "EOZ_SHARED_DATA")


def command_line() -> str:
    """The shell command that reran this script, from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO_ROOT)
    except ValueError:
        pass
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in _ENV_KEYS if k in os.environ]
    return " ".join(env + ["python", shlex.join([str(script), *sys.argv[1:]])])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
        return rev + (" (uncommitted changes)" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    """CPU, threads and library versions of this process, as the figures depend on them."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "imagecodecs": imagecodecs.__version__,
        "git": _git_revision(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def provenance_md(command: str, info: dict) -> list[str]:
    """Markdown lines: how to reproduce, and where it was measured."""
    return [
        "Reproduce (from the repository root):",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {info['cpu_model']}, os.cpu_count() = {info['cpu_count']} "
        f"(usable by this process: {info['cpu_affinity']}), "
        f"torch threads = {info['torch_threads']}, CUDA available: {info['cuda_available']}. "
        f"{info['platform']}; Python {info['python']}, numpy {info['numpy']}, "
        f"torch {info['torch']}, imagecodecs {info['imagecodecs']}. "
        f"Code: git {info['git']}. Run on {info['date']}.",
        "",
    ]


def least_cpu_time(fn, runs: int):
    """fn's result and the least CPU seconds this process spent on it in ``runs`` calls: the
    codecs timed so run on one thread, and CPU time is not moved by other work sharing the
    machine, as wall time is, but cache and memory contention still add to it in bursts (one
    call per figure put Landsat's encode at 1.5-2.0 in three runs of one build); the least of a
    few calls is the codec's own speed."""
    out, seconds = None, float("inf")
    for _ in range(runs):
        start = time.process_time()
        result = fn()
        seconds = min(seconds, time.process_time() - start)
        out = result if out is None else out
    return out, seconds


def table(headers: list[str], rows: list[list]) -> list[str]:
    """A markdown table; cells are written as given (format numbers before)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def write_outputs(out_dir: Path, name: str, markdown: list[str], data: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text("\n".join(markdown).rstrip() + "\n")
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
    print(f"wrote {out_dir / (name + '.md')} and {name}.json")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
