"""The ``synthgen`` command. Every error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from synthgen.config_values import parse_value
from synthgen.errors import SynthgenError
from synthgen.ingest import cli as ingest_cli

if TYPE_CHECKING:
    from synthgen.store import Dataset

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; we print the error and a pointer to --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "b=[1,2]", "c=true", "d=text"]`` -> ``{"a": 1, "b": [1, 2], "c": True, "d": "text"}``
    (values are JSON where they parse as JSON, strings otherwise)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SynthgenError(f"--set expects key=value, got {pair!r}")
        overrides[key] = parse_value(value)
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="synthgen", description=(
        "Manufacture labelled synthetic 3D volumes as Zarr v3 shards, inspect and verify them."))
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    gen = commands.add_parser("generate", help="make a dataset (or finish an interrupted one)")
    gen.add_argument("--engine", required=True, help="engine name, e.g. random-shapes")
    gen.add_argument("--n", type=int, required=True, help="number of samples")
    gen.add_argument("--out", required=True, help="dataset path or URL, e.g. shards.zarr")
    gen.add_argument("--size", type=int, default=None, help="cube side in voxels (engine default: 128)")
    gen.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    gen.add_argument("--shard-size", type=int, default=None,
                     help="samples per shard (default: ~256 MiB of uncompressed data per shard)")
    gen.add_argument("--backend", choices=("ray", "local"), default="ray",
                     help="ray (default: local Ray runtime, or the cluster at --ray-address) or local (in-process)")
    gen.add_argument("--workers", type=int, default=None, help="parallel shard tasks (default: all CPUs)")
    gen.add_argument("--ray-address", default=None, help="existing Ray cluster, HOST:PORT or 'auto'")
    gen.add_argument("--gpus-per-task", type=float, default=None, metavar="G",
                     help="each shard task asks Ray for G GPUs (0.25: four tasks share a GPU) and "
                          "generates on its GPU (default: CPU tasks)")
    gen.add_argument("--templates", default=None, metavar="BANK",
                     help="label-ensemble template bank (default: the built-in procedural bank)")
    gen.add_argument("--store", choices=("views", "labels"), default=None,
                     help="label-ensemble: store rendered views (default) or only label maps, "
                          "re-rendered by the reader (~1/100 of the bytes)")
    gen.add_argument("--label-codec", default=None, metavar="CODEC",
                     help="compression of label maps: lz4 (default for a new dataset: fast to decode), zstd "
                          "(~30%% smaller, 4-5x slower to decode) or none (raw); resuming keeps the dataset's")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing synthgen dataset at --out")
    gen.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="engine parameter override (repeatable), e.g. --set num_labels=8")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")

    ingest_cli.add_parser(commands)

    info = commands.add_parser("info", help="describe a dataset")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="print the dataset attributes as JSON")

    verify = commands.add_parser("verify", help="re-check every committed shard's checksum")
    verify.add_argument("path")

    preview = commands.add_parser("preview", help="tri-planar PNG montage of some samples")
    preview.add_argument("path")
    preview.add_argument("--samples", default="0:4", help="sample range A:B (default 0:4)")
    preview.add_argument("--out", required=True, help="PNG file to write")

    bench = commands.add_parser("stream-bench", help="samples/s and MB/s of streaming a dataset into a DataLoader")
    bench.add_argument("path")
    bench.add_argument("--workers", type=int, default=2,
                       help="DataLoader worker processes (default 2; 0: the stream iterated directly)")
    bench.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    bench.add_argument("--fields", nargs="+", default=None, help="fields to read (default: all stored)")
    bench.add_argument("--samples", type=int, default=None, help="stop after this many samples")

    templates = commands.add_parser("templates", help="build, list and preview template banks")
    banks = templates.add_subparsers(dest="templates_command", required=True, parser_class=OneLineParser)
    build = banks.add_parser("build", help="build a bank from TotalSegmentator masks, label maps, or both")
    build.add_argument("--totalsegmentator", metavar="DIR",
                       help="TotalSegmentator layout: DIR/sNNNN/segmentations/<organ>.nii.gz")
    build.add_argument("--label-maps", metavar="DIR",
                       help="multi-label maps DIR/*.nii.gz, one template per label (with --totalsegmentator: "
                            "one combined bank)")
    build.add_argument("--out", required=True, help="bank path, e.g. bank.zarr")
    build.add_argument("--spacing", type=float, default=1.5,
                       help="common isotropic spacing in mm (default 1.5; 0 keeps native spacing)")
    build.add_argument("--workers", type=int, default=None, help="parallel subjects (default: all CPUs)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    listing = banks.add_parser("list", help="summarise a bank")
    listing.add_argument("bank", help="bank path, or 'default' for the built-in bank")
    bank_preview = banks.add_parser("preview", help="PNG grid of templates")
    bank_preview.add_argument("bank", help="bank path, or 'default' for the built-in bank")
    bank_preview.add_argument("--out", required=True, help="PNG file to write")
    bank_preview.add_argument("--count", type=int, default=48, help="templates shown (default 48)")

    export = commands.add_parser("export", help="write one sample as NIfTI files")
    export.add_argument("path")
    export.add_argument("--sample", type=int, required=True, help="sample index")
    export.add_argument("--out", required=True, help="output directory")
    export.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out, replacing the files of an earlier export "
                             "(other files are kept)")
    return parser


def parse_range(text: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            return int(start), int(start) + 1
        return int(start or 0), int(stop)
    except ValueError:
        raise SynthgenError(f"--samples expects A:B (e.g. 0:8), got {text!r}") from None


def cmd_generate(args: argparse.Namespace) -> int:
    from synthgen.engines import get_engine
    from synthgen.runner import generate

    config = parse_overrides(args.overrides)
    for option in ("size", "templates", "store"):
        if getattr(args, option) is not None:
            config[option] = getattr(args, option)
    engine = get_engine(args.engine, **config)
    report = generate(engine, args.out, args.n, seed=args.seed, shard_size=args.shard_size,
                      backend=args.backend, workers=args.workers, ray_address=args.ray_address,
                      overwrite=args.overwrite, progress=not args.quiet, gpus_per_task=args.gpus_per_task,
                      label_codec=args.label_codec)
    print(report)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from synthgen.store.reader import open_stored_dataset

    dataset = open_stored_dataset(args.path, "store to describe")
    info = dataset.info
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return 0
    disk = dataset.objects.disk_usage()
    committed = dataset.committed
    stored_samples = sum(info.shard_range(k)[1] - info.shard_range(k)[0] for k in committed)
    raw = stored_samples * info.sample_nbytes()
    per_sample = stored_bytes_per_sample(dataset)
    lines = [
        f"path:        {args.path}",
        f"engine:      {info.engine}   (synthgen {info.synthgen_version}, format v{info.format_version})",
        f"seed:        {info.seed}",
        f"samples:     {info.num_samples} in shards of {info.shard_size}",
        f"shards:      {len(committed)}/{info.num_shards} committed"
        + ("" if dataset.is_complete else "   (incomplete: rerun the same generate command)"),
        f"shape:       {' x '.join(map(str, info.shape))} voxels at "
        f"{' x '.join(f'{s:g}' for s in info.spacing)} mm",
        f"on disk:     {disk / 2**20:.1f} MiB for {stored_samples} samples; uncompressed "
        f"{raw / 2**20:.1f} MiB (ratio {raw / disk if disk else 0:.2f}x)",
        f"per sample:  {format_bytes(sum(per_sample.values()))} stored",
        f"codecs:      label maps {info.label_codec}; "
        + ("a crc32c per sample and field, checked on every read" if dataset.chunk_checksums
           else "no per-chunk checksums (written before them): `synthgen verify` checks the bytes"),
        *storage_modes(dataset, per_sample),
        "fields (stored per sample):",
    ]
    for name, spec in info.schema.items():
        size = format_bytes(per_sample[name]) if name in per_sample else "-"
        lines.append(f"  {name:<15} {spec.dtype:<8} {str(tuple(spec.shape)):<22} {size:>10}  {spec.meaning}")
    for name, spec in dataset.derived_schema.items():
        lines.append(f"  {name:<15} {spec.dtype:<8} {str(tuple(spec.shape)):<22} {'derived':>10}  "
                     f"{spec.meaning} (rendered from the stored fields when read)")
    lines.append("config:")
    lines.extend(f"  {key} = {json.dumps(value)}" for key, value in info.config.items())
    print("\n".join(lines))
    return 0


def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while count >= 1024 and power < len(units) - 1:
        count /= 1024
        power += 1
    return f"{count:.0f} B" if power == 0 else f"{count:.1f} {units[power]}"


def stored_bytes_per_sample(dataset: "Dataset") -> dict[str, float]:
    """Mean stored bytes per sample of each field, from the commit records (empty if none)."""
    from synthgen.store.commits import read_commit

    totals: dict[str, int] = {}
    samples = 0
    for shard in dataset.committed:
        record = read_commit(dataset.objects, shard)
        samples += record.stop - record.start
        for field, obj in record.objects.items():
            totals[field] = totals.get(field, 0) + obj.nbytes
    return {field: total / samples for field, total in totals.items()} if samples else {}


def storage_modes(dataset: "Dataset", per_sample: dict[str, float]) -> list[str]:
    """For engines with a ``store`` option: bytes per sample under each mode. Derived fields
    (views) would be stored raw float16, which no lossless codec shrinks."""
    import numpy as np

    from synthgen.engines import get_engine

    info = dataset.info
    if "store" not in info.config or not per_sample:
        return []
    labels_only = get_engine(info.engine, **{**info.config, "store": "labels"})
    kept = sum(per_sample.get(name, 0.0) for name in labels_only.schema)
    views = sum(int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
                for spec in labels_only.derived_schema.values())
    return [f"storage:     --store labels {format_bytes(kept)}/sample, --store views "
            f"{format_bytes(kept + views)}/sample ({(kept + views) / kept:.0f}x)"]


def cmd_verify(args: argparse.Namespace) -> int:
    from synthgen.store.reader import open_stored_dataset

    report = open_stored_dataset(args.path, "bytes to verify").verify()
    for problem in report.problems:
        print(f"BAD {problem}", file=sys.stderr)
    if report.problems:
        bad = sorted({p.split()[1].rstrip(":") for p in report.problems}, key=int)
        print(f"{args.path}: {len(bad)} bad shard(s) of {report.checked} committed ({', '.join(bad)}); "
              f"delete their commit records in _commits/ and rerun generate to rewrite them", file=sys.stderr)
        return 1
    if report.missing_shards:
        print(f"{args.path}: {report.checked} committed shards OK, but {report.missing_shards} of "
              f"{report.total} not committed yet; rerun the same generate command to finish", file=sys.stderr)
        return 1
    print(f"{args.path}: all {report.checked} shards OK")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from synthgen.preview import render_preview
    from synthgen.store import open_dataset

    start, stop = parse_range(args.samples)
    print(render_preview(open_dataset(args.path), start, stop, args.out))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from synthgen.export import export_sample
    from synthgen.store.reader import open_stored_dataset

    for path in export_sample(open_stored_dataset(args.path, "stored sample to export"), args.sample, args.out,
                              overwrite=args.overwrite):
        print(path)
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    from synthgen import templates

    if args.templates_command == "build":
        spacing = args.spacing if args.spacing != 0 else None
        sources = {kind: folder for kind, folder in (("totalsegmentator", args.totalsegmentator),
                                                     ("label-maps", args.label_maps)) if folder}
        if not sources:
            raise SynthgenError("templates build needs a source: --totalsegmentator DIR, --label-maps DIR, or both")
        print(templates.build_from_sources(args.out, sources, spacing=spacing, workers=args.workers,
                                           progress=not args.quiet))
        return 0
    bank = templates.resolve_bank(args.bank)
    if args.templates_command == "list":
        print(templates.summarize_bank(bank))
    else:
        print(templates.render_bank_preview(bank, args.out, count=args.count))
    return 0


def cmd_stream_bench(args: argparse.Namespace) -> int:
    from synthgen.stream.bench import stream_bench

    if args.workers < 0 or args.batch_size < 1:
        raise SynthgenError("--workers must be >= 0 and --batch-size >= 1")
    print(stream_bench(args.path, fields=args.fields, workers=args.workers, batch_size=args.batch_size,
                       max_samples=args.samples))
    return 0


COMMANDS = {"generate": cmd_generate, "info": cmd_info, "verify": cmd_verify, "preview": cmd_preview,
            "export": cmd_export, "templates": cmd_templates, "stream-bench": cmd_stream_bench,
            "ingest": ingest_cli.cmd_ingest}


def run_command(prefix: str, command: Callable[[], int],
                interrupted: Callable[[KeyboardInterrupt], tuple[str, int]]) -> int:
    """Run ``command()`` and return its exit status; a SynthgenError becomes the line
    ``"{prefix}: error: {message}"`` on stderr and exit EXIT_ERROR, and ctrl-c (a
    KeyboardInterrupt, or a subclass raised to stop cleanly) the line ``"{prefix}: {text}"`` and
    the status that ``interrupted(exc)`` returns as ``(text, status)``."""
    try:
        return command()
    except SynthgenError as err:
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        text, status = interrupted(exc)
        print(f"{prefix}: {text}", file=sys.stderr)
        return status


def dispatch(prog: str, commands: dict[str, Any], args: argparse.Namespace, interrupted: str) -> int:
    """Run ``commands[args.command](args)`` with :func:`run_command`: errors are one line prefixed
    ``"{prog} {command}"``, ctrl-c the line ``interrupted`` and exit EXIT_INTERRUPTED."""
    return run_command(f"{prog} {args.command}", lambda: commands[args.command](args),
                       lambda _: (interrupted, EXIT_INTERRUPTED))


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("synthgen", COMMANDS, build_parser().parse_args(argv),
                    "interrupted; committed shards are kept, rerun the same command to finish")


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
