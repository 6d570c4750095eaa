"""What a new user meets in the `eoz` command line (issue 15 items 2-6): the models table,
progress bars on a terminal, what compress reports, auto that always picks, and clear errors."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from importlib.metadata import version

import numpy as np
import pytest

from eoz import metrics
from eoz.cli import main
from eoz.raster import write_raster
from eoz.resolve import honoured
from eoz.scene import decompress_array
from tests.eoz.test_cli import _assert_clean_error, run, scene  # noqa: F401  (scene: a fixture)


@pytest.fixture()
def landsat_like(scene, tmp_path):  # noqa: F811
    """Ten real uint16 bands, the Landsat 8 count: no VQ or band-fitted model takes them."""
    _, array, meta = scene
    bands = np.concatenate([array, array[:, ::-1], array[:2, :, ::-1]])
    meta.count, meta.band_names = 10, [f"B{i}" for i in range(1, 11)]
    path = tmp_path / "landsat_like.tif"
    write_raster(path, bands, meta)
    return path, bands


# --- item 2: eoz models ---------------------------------------------------------------------

def test_models_prints_one_table_row_per_model_and_json_on_request(capsys, codec_env):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["MODEL", "VERSION", "CODEC", "BANDS", "SIZE", "DTYPE"]
    rows = {line.split()[0]: i for i, line in enumerate(lines) if i and not line.startswith(" ")}
    assert list(rows) == ["tiny-hp", "tiny-predictive", "tiny-sar", "tiny-vq", "tiny-wavelet", "jpeg2000"]

    def under(model: str) -> list[str]:
        """The row's lines: the row, then what it is for and its quality options, indented."""
        start = rows[model]
        end = min([i for i in rows.values() if i > start], default=len(lines))
        return lines[start:end]

    size = sum(f.stat().st_size for f in (codec_env.root / "tiny-vq" / "1").iterdir())
    vq = under("tiny-vq")
    assert vq[0].split() == ["tiny-vq", "1", "vqvae-fpn", "4", f"{size / 1e3:.0f}", "kB", "uint16"]
    assert vq[1:] == ["    test model", "    quality options: --rate-weight"]
    flags = " ".join(f"--{o.replace('_', '-')}" for o in honoured("wavelet"))
    wavelet = under("tiny-wavelet")
    assert wavelet[0].split()[3] == "any" and wavelet[0].endswith("any")
    assert wavelet[2] == f"    quality options: {flags}; auto's default: --psnr 50"
    assert under("tiny-predictive")[0].endswith("uint8,int8,uint16,int16,uint32,int32,float32,float64")
    assert under("jpeg2000")[0].split()[1:5] == ["-", "jpeg2000", "any", "built"]
    assert len(lines) == 1 + 3 * 6 and all("B02" not in line for line in lines)   # band names: --json

    code, models, _ = run(capsys, "models", "--json")
    assert code == 0 and [m["model_id"] for m in models][-1] == "jpeg2000"
    assert next(m for m in models if m["model_id"] == "tiny-vq")["bands"] == ["B02", "B03", "B04", "B08"]


def test_a_reader_that_stops_early_ends_eoz_quietly(codec_env):
    """`eoz models | head -1`: the reader is gone before eoz writes; no traceback, and the exit
    status a shell gives a tool stopped by SIGPIPE."""
    for args in (["models"], ["models", "--json"]):
        process = subprocess.Popen([sys.executable, "-m", "eoz.cli", *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        process.stdout.close()
        error = process.stderr.read()
        assert process.wait() == 128 + signal.SIGPIPE and error == b"", error


# --- item 3: progress -----------------------------------------------------------------------

def _on_a_terminal(*args: str) -> tuple[int, str]:
    """`eoz ARGS` with stderr on a pseudo-terminal (stdout a pipe): exit code and what the terminal showed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))   # rows, columns
    process = subprocess.Popen([sys.executable, "-m", "eoz.cli", *args], stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:   # the terminal closes when the process ends
            break
        if not chunk:
            break
        shown += chunk
    process.stdout.read()
    os.close(leader)
    return process.wait(), shown.decode(errors="replace")


def test_progress_bars_show_on_a_terminal_and_not_with_quiet(codec_env, scene, tmp_path):  # noqa: F811
    src, _, _ = scene
    out = tmp_path / "x.eoz"
    code, shown = _on_a_terminal("compress", str(src), str(out), "--model", "tiny-wavelet", "--psnr", "40",
                                 "--tile-size", "32")
    assert code == 0 and re.search(r"compress.*100%.*12/12 tiles", shown), shown
    code, shown = _on_a_terminal("decompress", str(out), str(tmp_path / "x.tif"))
    assert code == 0 and re.search(r"decompress.*12/12 tiles", shown), shown
    code, shown = _on_a_terminal("eval", str(src), "--model", "tiny-wavelet", "--psnr", "40", "--tile-size", "32")
    assert code == 0 and re.search(r"eval.*24/24 tiles", shown), shown   # each tile encoded, then decoded
    code, shown = _on_a_terminal("compress", str(src), str(out), "--model", "tiny-wavelet", "--psnr", "40",
                                 "--tile-size", "32", "--quiet")
    assert code == 0 and "tiles" not in shown


def test_no_progress_when_stderr_is_not_a_terminal(capsys, codec_env, scene, tmp_path):  # noqa: F811
    src, _, _ = scene
    code, _, err = run(capsys, "compress", src, tmp_path / "x.eoz", "--model", "tiny-wavelet", "--psnr", 40)
    assert code == 0 and err == ""


def test_the_library_reports_each_tile(codec_env, scene):  # noqa: F811
    """One callback for the CLI's bars and the service's job progress: (tiles done, tiles in all)."""
    from eoz.codecs import codec_for_model
    from eoz.evaluation import evaluate
    from eoz.scene import compress_array, decompress_array

    _, array, meta = scene
    codec = codec_for_model("tiny-vq", None)   # batches tiles: reported one by one all the same
    encoded, decoded, both = [], [], []
    data = compress_array(array, meta, codec, 32, progress=lambda *p: encoded.append(p))
    decompress_array(data, window=(0, 0, 40, 40), progress=lambda *p: decoded.append(p))
    evaluate(array, meta, codec, 32, progress=lambda *p: both.append(p))
    assert encoded == [(n, 12) for n in range(1, 13)]
    assert decoded == [(n, 4) for n in range(1, 5)]
    assert both == [(n, 24) for n in range(1, 25)]


# --- item 4: what compress reports ------------------------------------------------------------

def test_compress_reports_ratio_bits_and_the_quality_the_encoder_holds_to(capsys, codec_env, scene, tmp_path):  # noqa: F811
    src, array, _ = scene
    samples = array.size

    def compress(*options) -> dict:
        path = tmp_path / "x.eoz"
        code, out, _ = run(capsys, "compress", src, path, "--tile-size", 64, *options)
        assert code == 0
        assert out["bytes"] == path.stat().st_size and out["raw_bytes"] == array.nbytes
        assert out["compression_ratio"] == pytest.approx(array.nbytes / out["bytes"])
        assert out["bpp_per_band"] == pytest.approx(8 * out["bytes"] / samples)
        return out["quality"]

    assert compress("--model", "tiny-predictive", "--lossless") == {"exact": True, "measured": None}
    assert compress("--model", "tiny-predictive", "--max-error", 3) == {"max_error_per_band": [3.0] * 4,
                                                                       "measured": None}
    assert compress("--model", "tiny-wavelet", "--psnr", 40, "--block", 32) == {
        "psnr_at_least": 40.0, "psnr_peak": 10000.0, "per": "block of 32 px", "measured": None}
    assert compress("--model", "jpeg2000", "--psnr", 45) == {
        "psnr_at_least": 45.0, "psnr_peak": 10000.0, "per": "tile", "measured": None}
    unknown = compress("--model", "tiny-vq")
    assert unknown == {"measured": None, "note": "not measured: --measure decodes the file once to measure it"}

    measured = compress("--model", "tiny-vq", "--measure")["measured"]
    recon, _ = decompress_array((tmp_path / "x.eoz").read_bytes())
    assert measured["psnr"] == pytest.approx(metrics.psnr(array, recon, 10000.0)) and measured["psnr_peak"] == 10000.0


# --- item 5: auto in the CLI ----------------------------------------------------------------

def test_auto_picks_for_a_raster_no_learned_model_fits_and_says_so(capsys, codec_env, landsat_like, tmp_path):
    src, _ = landsat_like
    code, out, err = run(capsys, "compress", src, tmp_path / "l8.eoz", "--model", "auto", "--tile-size", 64)
    assert code == 0 and out["model_id"] == "tiny-wavelet"
    assert err == f"eoz: --model auto picked {out['picked']}\n"
    assert "no vqvae-fpn model takes a 10-band uint16 raster" in err and "default --psnr 50 at peak 10000" in err
    assert out["quality"]["psnr_at_least"] == 50.0


# --- item 6: version, help and errors ---------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"eoz {version('eoz')} (.eoz format 1)\n"


def test_window_says_which_number_is_which(capsys):
    with pytest.raises(SystemExit):
        main(["decompress", "--help"])
    assert "--window COL ROW WIDTH HEIGHT" in capsys.readouterr().out


def test_a_block_size_outside_the_choices_names_them(capsys, scene, tmp_path):  # noqa: F811
    with pytest.raises(SystemExit) as done:
        main(["compress", str(scene[0]), str(tmp_path / "x.eoz"), "--model", "jpeg2000", "--block", "33"])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert "argument --block: block is 16, 32, 64 or global, not 33" in err and "None" not in err


def test_a_missing_output_folder_is_one_clear_line(capsys, codec_env, scene, tmp_path):  # noqa: F811
    src = scene[0]
    missing = tmp_path / "no" / "such"
    for command, args in (("compress", [src, missing / "x.eoz", "--model", "jpeg2000", "--lossless"]),
                          ("features", [src, missing / "f.tif", "--model", "tiny-vq"])):
        code, out, err = run(capsys, command, *args)
        _assert_clean_error(code, out, err, command, f"the output folder {missing} does not exist")
        assert ".part" not in err


def test_the_jpeg2000_error_names_the_flags(capsys, scene, tmp_path):  # noqa: F811
    code, out, err = run(capsys, "compress", scene[0], tmp_path / "x.eoz", "--model", "jpeg2000")
    _assert_clean_error(code, out, err, "compress", "--psnr", "--quality", "--lossless")
    assert "target_psnr" not in err
