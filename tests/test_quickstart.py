"""The README's quick start works in a clone without ../shared: the block is examples/quickstart.sh,
which runs on the bundled samples only and writes nothing into the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eoz.datasets import SPLITS
from eoz.errors import InputError
from eoz.raster import read_meta, read_raster
from examples.make_samples import SAMPLE_DIR, SAMPLES, Sample, build, check_training_side

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "quickstart.sh"
WRITERS = ("compress", "decompress", "features")   # eoz commands whose second argument is an output


def script_body() -> list[str]:
    """The script's lines below its header (the first blank line)."""
    lines = SCRIPT.read_text().splitlines()
    return lines[lines.index("") + 1:]


def readme_block(section: str) -> list[str]:
    """The first ```sh block under a README heading."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {section}\n")
    match = re.compile(r"```sh\n(.*?)```", re.S).search(text, start)
    return match.group(1).splitlines()


def outputs(lines: list[str]) -> list[str]:
    """The files the quick start writes: the output argument of every writing command."""
    written = []
    for line in lines:
        words = line.split("#")[0].split()
        if words[:1] == ["eoz"] and words[1] in WRITERS:
            written.append(words[3])
    return written


def test_readme_quick_start_is_the_script():
    assert readme_block("CLI quick start") == script_body()


def test_quick_start_writes_each_output_once_into_the_scratch_folder():
    written = outputs(script_body())
    assert len(written) >= 10
    assert all(path.startswith("$OUT/") for path in written)
    assert len(set(written)) == len(written)


def test_quick_start_reads_only_the_bundled_samples():
    inputs = [line.split("=", 1)[1].split()[0] for line in script_body() if re.match(r"^[A-Z0-9]+=examples/", line)]
    assert sorted(inputs) == sorted(f"examples/data/{s.name}" for s in SAMPLES)


def test_quick_start_runs_without_shared_data(tmp_path):
    """The whole script, as a fresh clone runs it: no ../shared (EOZ_SHARED_DATA names a missing
    folder), the repository as the working directory, the scratch folder under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EOZ_")}
    env.update(EOZ_SHARED_DATA=str(tmp_path / "no-shared-data"), TMPDIR=str(tmp_path),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    assert shutil.which("eoz", path=env["PATH"]), "the eoz command is not installed (pip install -e .)"
    run = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    scratch = [p for p in tmp_path.iterdir() if p.name.startswith("tmp.")]
    assert len(scratch) == 1
    produced = sorted(p.name for p in scratch[0].iterdir())
    assert produced == sorted(w.removeprefix("$OUT/") for w in outputs(script_body()))


def test_samples_are_small_and_georeferenced():
    sizes = [(SAMPLE_DIR / s.name).stat().st_size for s in SAMPLES]
    assert sum(sizes) < 3 * 2 ** 20
    for sample in SAMPLES:
        meta = read_meta(SAMPLE_DIR / sample.name)
        assert meta.crs and meta.transform, sample.name
        assert not any(name.startswith("band") and name[4:].isdigit() for name in meta.band_names), sample.name


def test_sample_readme_names_every_sample_and_its_source():
    text = (SAMPLE_DIR / "README.md").read_text()
    assert all(f"`{s.name}`" in text and f"`{s.source}`" in text for s in SAMPLES)


def test_sample_table_keeps_to_the_training_side():
    for sample in SAMPLES:   # the sources' heights, from shared/data/MANIFEST.md (no ../shared needed)
        check_training_side(sample, source_height=603 if sample.split == "landsat8" else 10_000)
    validation = Sample("x.tif", "s2-10m", SPLITS["s2-10m"].validation[0])
    with pytest.raises(InputError, match="not in the training part"):
        check_training_side(validation, 10_000)
    landsat = next(s for s in SAMPLES if SPLITS[s.split].train_rows is not None)
    too_low = Sample("x.tif", landsat.split, landsat.source, (0, 400, 128, 128))
    with pytest.raises(InputError, match="past the 452 training rows"):
        check_training_side(too_low, 603)


def test_samples_rebuild_from_shared_data(shared_data, tmp_path):
    """make_samples.py reproduces the committed files' pixels and georeferencing."""
    for sample in SAMPLES:
        rebuilt, meta = read_raster(build(sample, shared_data, tmp_path))
        bundled, bundled_meta = read_raster(SAMPLE_DIR / sample.name)
        np.testing.assert_array_equal(rebuilt, bundled)
        assert meta == bundled_meta


def test_gitignore_ignores_outputs_never_committed_files():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(*paths: str) -> set[str]:
        run = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True)
        return set(run.stdout.split())

    scratch = ["q.eoz", "dubai.tif", "x/y.eoz", "q.eoz.part", ".out.tif.0123.tmp.tif", "eoz-data/jobs.sqlite3",
                "runs/wavelet/log.jsonl", "eoz/__pycache__/cli.cpython-311.pyc", ".benchmarks/x.json"]
    kept = ["tests/data/golden/new_case.eoz", "examples/data/new_sample.tif", "examples/quickstart.sh"]
    assert ignored(*scratch, *kept) == set(scratch)
    committed_but_ignored = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=REPO,
                                           capture_output=True, text=True, check=True).stdout
    assert committed_but_ignored == ""
