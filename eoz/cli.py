"""The `eoz` command line: compress, decompress, info, verify, eval, features, models, train, serve, worker."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path

from eoz.errors import EozError

TRAINABLE = {"vqvae-fpn-s2-10m": ("s2-10m", "vqvae-fpn"), "vqvae-fpn-s2-10m-x4": ("s2-10m", "vqvae-fpn"),
             "hyperprior-s2-10m": ("s2-10m", "hyperprior"),
             "vqvae-fpn-s2-20m": ("s2-20m", "vqvae-fpn"), "hyperprior-s1-db": ("s1-db", "hyperprior"),
             "hyperprior-enmap-hsi": ("enmap-hsi", "spectral-partition"),
             "wavelet-hyperprior": ("all", "wavelet"), "predictive": ("all", "predictive")}


def _block(value: str) -> int | None:
    """--block: 16, 32, 64 or global (one target per tile), said so when it is anything else."""
    from eoz.quality import BLOCK_SIZES

    if value == "global":
        return None
    if value not in {str(size) for size in BLOCK_SIZES}:
        sizes = ", ".join(map(str, sorted(BLOCK_SIZES)))
        raise argparse.ArgumentTypeError(f"block is {sizes} or global, not {value}")
    return int(value)


def _check_output_folder(path: Path) -> None:
    """Say so up front rather than with the errno of a scratch file, after the work."""
    if not path.parent.is_dir():
        raise EozError(f"the output folder {path.parent} does not exist")


def _resolve(args, meta=None):
    """The model, codec arguments and peak for the codec options; says what --model auto picked."""
    from eoz.raster import read_meta
    from eoz.resolve import OPTIONS, resolve

    resolved = resolve(args.model, args.version, {name: getattr(args, name) for name in OPTIONS},
                       meta or read_meta(args.input))
    if resolved.reason:
        print(f"eoz: --model auto picked {resolved.reason}", file=sys.stderr)
    return resolved


def _add_codec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="auto",
                   help="model id from `eoz models`, jpeg2000, or auto, the default (picked from the bands and "
                        "dtype among the models that honour every option given; --lossless, --max-error or "
                        "--fast: predictive)")
    p.add_argument("--version", help="model version (default: the newest)")
    p.add_argument("--tile-size", type=int, help="tile edge in pixels (default 512; smaller for many bands, "
                                                 "so that a tile stays within the decode limits)")
    p.add_argument("--overlap", type=int, help="context pixels coded around each tile against seams "
                                                "(default: the codec's, 8 for vqvae-fpn, else 0)")
    q = p.add_argument_group("quality targets (hyperprior, spectral-partition, wavelet; --psnr also for jpeg2000)")
    q.add_argument("--psnr", type=float, help="target PSNR (at --peak) that every block (or tile) reaches")
    q.add_argument("--mse", type=float, help="target MSE in original units, per block (or tile)")
    q.add_argument("--lambda", type=float, help="fixed rate-distortion lambda (64..65536)")
    q.add_argument("--block", type=_block, default=None, metavar="64|32|16|global",
                   help="block edge over which the target holds (default global: per tile)")
    q.add_argument("--open-loop", action="store_true", help="quality model only, no closed-loop correction")
    q.add_argument("--peak", type=float, help="PSNR peak, any codec (default: the model's, else 255 for "
                                               "uint8, else 10000 for S2 DN; a float raster's --psnr needs "
                                               "it unless the model was trained on floats)")
    q.add_argument("--no-band-prediction", action="store_true",
                   help="spectral-partition: code every band on its own, not from the band before")
    b = p.add_argument_group("bounded error (predictive)")
    b.add_argument("--max-error", type=float, nargs="+", metavar="N",
                   help="no sample's error exceeds N, in the data's units (dB for SAR in dB): one value, or "
                        "one per band; integer rasters take whole numbers; 0 = lossless")
    b.add_argument("--fast", action="store_true",
                   help="about twice the speed of encoding and decoding for a few per cent more bytes (no "
                        "learned correction, no band-order trial); lossless unless --max-error")
    v = p.add_argument_group("vqvae-fpn options")
    v.add_argument("--rate-weight", type=float, help="choose codes by distance + weight x bits: smaller "
                                                     "files for a little quality (default 0, about 0.5-3)")
    j = p.add_argument_group("jpeg2000 options")
    j.add_argument("--quality", type=float, help="OpenJPEG fixed-quality level (dB at full scale)")
    j.add_argument("--lossless", action="store_true",
                   help="bit exact (predictive: checked by a sha256 per tile; jpeg2000: reversible 5/3 wavelet)")
    j.add_argument("--klt", action="store_true", help="spectral KLT across bands before coding")


def cmd_compress(args) -> dict:
    from eoz.evaluation import measure_file, size_figures, stated_quality
    from eoz.progress import bar
    from eoz.scene import compress_file

    _check_output_folder(args.output)
    resolved = _resolve(args)
    with bar("compress", quiet=args.quiet) as progress:
        header = compress_file(args.input, args.output, resolved.codec(), args.tile_size, args.overlap, progress,
                               args.threads)
    size = Path(args.output).stat().st_size
    quality = stated_quality(header)
    if args.measure:
        with bar("measure", quiet=args.quiet) as progress:
            quality["measured"] = measure_file(args.output, args.input, resolved.peak, progress=progress,
                                               threads=args.threads)
    else:
        quality["measured"] = None
        if len(quality) == 1:
            quality["note"] = "not measured: --measure decodes the file once to measure it"
    result = {"output": str(args.output), "bytes": size,
              **size_figures(header.height, header.width, len(header.bands), header.dtype, size),
              "tiles": header.tile_count, "model_id": header.model_id or header.codec,
              "model_version": header.model_version, "lossless": header.lossless, "quality": quality}
    if resolved.reason:
        result["picked"] = resolved.reason
    return result


def cmd_decompress(args) -> dict:
    from eoz.progress import bar
    from eoz.scene import decompress_file

    _check_output_folder(args.output)
    with bar("decompress", quiet=args.quiet) as progress:
        meta = decompress_file(args.input, args.output, tuple(args.window) if args.window else None, args.cog,
                               progress=progress, threads=args.threads)
    return {"output": str(args.output), "width": meta.width, "height": meta.height,
            "bands": meta.band_names, "cog": args.cog}


def cmd_info(args) -> dict:
    from eoz.container import FORMAT_VERSION, EozReader

    with EozReader(args.input) as reader:
        lengths = [e.length for e in reader.entries]
        return {"format_version": FORMAT_VERSION, "file_bytes": reader.file_size,
                "lossless": reader.header.lossless,
                "header": reader.header.to_dict(),
                "tiles": {"count": len(lengths), "rows": reader.header.tile_rows,
                          "cols": reader.header.tile_cols, "payload_bytes": sum(lengths),
                          "min_bytes": min(lengths), "max_bytes": max(lengths),
                          "corrupt": reader.verify()}}


def cmd_eval(args) -> dict:
    from eoz.evaluation import evaluate
    from eoz.progress import bar
    from eoz.raster import RasterReader

    with RasterReader(args.input) as reader:
        array, meta = reader.read()
        valid = reader.read_valid((0, 0, meta.width, meta.height)) if "mask" in meta.metadata else None
    resolved = _resolve(args, meta)
    with bar("eval", quiet=args.quiet) as progress:
        return evaluate(array, meta, resolved.codec(), args.tile_size, resolved.peak, overlap=args.overlap,
                        progress=progress, threads=args.threads, valid=valid)


def cmd_verify(args) -> dict:
    from eoz.verify import verify

    return verify(args.input, args.original, threads=args.threads)


def cmd_features(args) -> dict:
    from eoz.features import extract_features
    from eoz.progress import bar
    from eoz.raster import read_meta
    from eoz.resolve import resolve

    _check_output_folder(args.output)
    codec = resolve(args.model, args.version, {}, read_meta(args.input), codecs=("vqvae-fpn",)).codec()
    with bar("features", quiet=args.quiet) as progress:
        meta = extract_features(args.input, args.output, codec, quantized=not args.continuous,
                                tile_size=args.tile_size, progress=progress)
    return {"output": str(args.output), "width": meta.width, "height": meta.height, "channels": meta.count,
            "quantized": not args.continuous}


def cmd_models(args) -> list | str:
    """A table, one row per model version; --json: the full records."""
    from eoz.registry import ModelStore
    from eoz.resolve import JPEG2000_DTYPES

    entries = ModelStore().entries()
    if args.json:
        return [e.summary() for e in entries] + [
            {"model_id": "jpeg2000", "codec": "jpeg2000", "bands": "any", "dtype": list(JPEG2000_DTYPES),
             "description": JPEG2000_DESCRIPTION}]
    return _models_table(entries)


JPEG2000_DESCRIPTION = "OpenJPEG JPEG 2000 baseline: lossless, fixed quality or target PSNR, optional spectral KLT"


def _models_table(entries) -> str:
    """Id, version, codec, band count, size and dtypes in columns; under each row what it is
    for, the quality options its codec honours and auto's default for it."""
    import shutil
    import textwrap

    from eoz.resolve import JPEG2000_ENTRY, default_quality, honoured

    width = shutil.get_terminal_size((100, 24)).columns
    rows, notes = [("MODEL", "VERSION", "CODEC", "BANDS", "SIZE", "DTYPE")], []
    for entry in [*entries, JPEG2000_ENTRY]:
        builtin = entry is JPEG2000_ENTRY
        size = sum(f.stat().st_size for f in entry.path.iterdir() if f.is_file()) if not builtin else None
        taken = entry.dtypes
        rows.append((entry.model_id, entry.version or "-", entry.codec, str(len(entry.bands) or "any"),
                     "built in" if builtin else _size(size), ",".join(taken) if taken else "any"))
        flags = " ".join(f"--{o.replace('_', '-')}" for o in honoured(entry.codec)) or "none"
        default = " ".join(f"--{k} {v:g}" for k, v in default_quality(entry).items())
        description = JPEG2000_DESCRIPTION if builtin else entry.manifest.get("description", "")
        notes.append([*textwrap.wrap(description, width - 4),
                      f"quality options: {flags}" + (f"; auto's default: {default}" if default else "")])
    columns = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(rows[0], columns)).rstrip()]
    for row, note in zip(rows[1:], notes):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, columns)).rstrip())
        lines += [f"    {line}" for line in note]
    return "\n".join(lines)


def _size(size: int) -> str:
    return f"{size / 1e3:.0f} kB" if size < 1e6 else f"{size / 1e6:.1f} MB"


def cmd_train(args) -> dict:
    if args.model_id not in TRAINABLE:
        raise EozError(f"no training recipe for {args.model_id!r}; recipes: {sorted(TRAINABLE)}")
    run_dir = Path(args.run_dir or Path("runs") / args.model_id)
    if TRAINABLE[args.model_id][1] in ("wavelet", "predictive"):
        return _train_tables(run_dir, args)

    import torch

    from eoz.progress import bar
    from eoz.train import RECIPE_OPTIONS, export, recipe, snapshot, train
    if args.snapshot:
        return {"snapshot": str(snapshot(run_dir, Path(args.snapshot)))}
    from eoz.train_partition import export_partition, train_partition
    if args.threads:
        torch.set_num_threads(args.threads)
    split, codec = TRAINABLE[args.model_id]
    cfg = recipe(args.model_id, split, codec)
    for name in ("steps", *RECIPE_OPTIONS):
        if getattr(args, name):
            setattr(cfg, name, getattr(args, name))
    partition = codec == "spectral-partition"
    with bar("train", unit="step", quiet=args.quiet) as progress:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        (train_partition if partition else train)(run_dir, cfg, device=device, progress=progress)
    result = {"run_dir": str(run_dir)}
    if args.export:
        manifest = (export_partition if partition else export)(run_dir, args.export, description=args.description)
        result["validation"] = {k: v for k, v in manifest["validation"].items() if k.startswith("mean")}
    return result


def _train_tables(run_dir: Path, args) -> dict:
    """The wavelet and predictive models fit their entropy models on every split's training
    part (minutes, no torch)."""
    from eoz import train_predictive, train_wavelet

    trainer = train_wavelet if TRAINABLE[args.model_id][1] == "wavelet" else train_predictive
    _, report = trainer.train(run_dir)
    result = {"run_dir": str(run_dir), "bits_per_sample": report["bits_per_sample"]}
    if args.export:
        trainer.export(run_dir, args.export, description=args.description)
    return result


def cmd_serve(args) -> None:
    """The HTTP API; with no REDIS_URL it also runs the jobs, in EOZ_WORKERS worker processes."""
    import uvicorn

    from app.banner import banner
    from workers.settings import Settings

    settings = Settings()  # a bad setting (EOZ_API_KEYS=" , ") stops here, with its message, not in uvicorn
    print(banner(settings, args.host, args.port), file=sys.stderr, flush=True)
    uvicorn.run("app.main:app", host=args.host, port=args.port, log_level="info")


def cmd_worker(args) -> None:
    """An RQ worker on REDIS_URL that keeps models loaded between jobs."""
    from workers.worker import run_worker

    run_worker([q.strip() for q in args.queues.split(",") if q.strip()], burst=args.burst)


def cmd_cleanup(args) -> dict:
    """One retention pass over EOZ_DATA_DIR or the bucket (what the service does hourly)."""
    from workers.cleanup import cleanup
    from workers.job_records import JobRecords
    from workers.settings import Settings
    from workers.store import make_store

    settings = Settings()
    if settings.redis_url:  # RQ's job hashes expire by TTL: this prunes the listings of them
        from workers.rq_runner import RQRunner

        records = RQRunner(settings)
    else:
        records = JobRecords(settings.data_dir / "jobs.sqlite3")
    try:
        return cleanup(settings, make_store(settings), records)
    finally:
        records.close()


def _threads(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"0 (one per CPU core) or more, not {value}")
    return value


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_threads, default=1, metavar="N",
                   help="tiles coded at once on N threads, the same bytes (0: one per CPU core; default 1); "
                        "predictive, wavelet and jpeg2000 (the networks use the cores already)")


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (there is none anyway when stderr is not a terminal)")


def _version() -> str:
    from importlib.metadata import version

    from eoz.container import FORMAT_VERSION

    return f"eoz {version('eoz')} (.eoz format {FORMAT_VERSION})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eoz", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="GeoTIFF -> .eoz")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    _add_codec_options(p)
    p.add_argument("--measure", action="store_true",
                   help="decode the file once and report its PSNR and MSE (without it: what the encoder "
                        "guarantees, when it does)")
    _add_threads(p)
    _add_quiet(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help=".eoz -> GeoTIFF or COG")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--window", type=int, nargs=4, metavar=("COL", "ROW", "WIDTH", "HEIGHT"),
                   help="decode only this part: column and row of its top-left pixel, then its width and "
                        "height, in pixels of the image")
    p.add_argument("--cog", action="store_true", help="write a Cloud-Optimized GeoTIFF")
    _add_threads(p)
    _add_quiet(p)
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("info", help="print a .eoz header and tile table summary as JSON")
    p.add_argument("input", type=Path)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("eval", help="compress and decompress in memory; print size and quality")
    p.add_argument("input", type=Path)
    _add_codec_options(p)
    _add_threads(p)
    _add_quiet(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("verify", help="check a .eoz against its original: exit 0 when every sample is exact "
                                      "(or within the file's --max-error), 1 when not")
    p.add_argument("input", type=Path)
    p.add_argument("original", type=Path)
    _add_threads(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("features", help="top-level VQVAE-FPN latents of a GeoTIFF as a georeferenced GeoTIFF")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--model", required=True, help="a vqvae-fpn model id")
    p.add_argument("--version", help="model version (default: the newest)")
    p.add_argument("--continuous", action="store_true",
                   help="the encoder's features before quantization instead of codebook vectors")
    p.add_argument("--tile-size", type=int, default=512, help="tile edge in pixels (default 512)")
    _add_quiet(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("models", help="list the models in model_store (and jpeg2000) as a table")
    p.add_argument("--json", action="store_true", help="the full records as JSON (bands, hashes, validation)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train (or resume) a model; optionally publish it")
    p.add_argument("model_id")
    p.add_argument("--run-dir", help="checkpoints and logs (default runs/MODEL_ID); reruns resume")
    p.add_argument("--steps", type=int, help="total steps (first start only; the run keeps its config)")
    p.add_argument("--lr", type=float, help="peak learning rate (first start only)")
    p.add_argument("--brightness", type=float,
                   help="augment: scale each crop by exp(U(-B, B)) in original units (first start only)")
    p.add_argument("--init-from", metavar="MODEL/VERSION|RUN_DIR",
                   help="start from a published model's or a run's weights and normalization (first start only)")
    p.add_argument("--ssim-weight", type=float,
                   help="VQ models: add this x (1 - SSIM in original units) to the loss (first start only)")
    p.add_argument("--device", help="torch device (default cuda when there is one, else cpu)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--export", metavar="VERSION", help="publish to model_store as this version")
    p.add_argument("--snapshot", metavar="DIR",
                   help="copy the run without its optimizer state to DIR (to commit; --run-dir DIR resumes it)")
    p.add_argument("--description", default="", help="what the published model is for")
    _add_quiet(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("serve", help="run the HTTP API (embedded default: jobs and storage in-process)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run a job worker on the RQ queues at REDIS_URL")
    p.add_argument("--queues", default="gpu,cpu", help="comma-separated queues, in priority order "
                                                       "(default gpu,cpu)")
    p.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("cleanup", help="remove uploads, results, scratch files and job records older than "
                                       "EOZ_RETENTION_DAYS (the service also does this hourly)")
    p.set_defaults(func=cmd_cleanup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (EozError, OSError, ValueError) as e:  # rasterio's I/O errors are OSErrors
        print(f"eoz {args.command}: error: {e}", file=sys.stderr)
        return 2
    if result is not None:  # serve and worker run until stopped and print nothing
        try:
            print(result if isinstance(result, str) else json.dumps(_finite(result), indent=2, default=str),
                  flush=True)
        except BrokenPipeError:  # the reader stopped early (eoz info F | head): end quietly, as other tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # or the exit's own flush fails again
            return 128 + signal.SIGPIPE
    return 1 if isinstance(result, dict) and result.get("verified") is False else 0


def _finite(value):
    """Strict JSON has no Infinity/NaN (an exact reconstruction has infinite PSNR): use strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
