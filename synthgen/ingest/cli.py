"""The ``synthgen ingest`` subcommand: its options and what it prints."""

from __future__ import annotations

import argparse
import sys

from synthgen.errors import SynthgenError


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``ingest`` to the ``synthgen`` subcommands."""
    ingest = commands.add_parser("ingest", help="turn real volumes (NIfTI, NRRD, MetaImage) into a dataset")
    sources = ingest.add_mutually_exclusive_group(required=True)
    sources.add_argument("--images", metavar="DIR|GLOB|CSV|JSON",
                         help="a folder of volumes, a quoted glob ('data/*.nii.gz'), a CSV with columns "
                              "image[,labels][,name], a TotalSegmentator folder, or a Learn2Reg dataset.json")
    sources.add_argument("--pairs", metavar="CSV|JSON",
                         help="registration pairs: the harness's pairs CSV or a Learn2Reg dataset.json "
                              "(fields fixed, moving[, fixed_labels, moving_labels])")
    ingest.add_argument("--split", choices=("train", "val", "test"), default="train",
                        help="with --pairs and a dataset.json: which pairs (default train)")
    ingest.add_argument("--labels", default=None, metavar="DIR|GLOB",
                        help="label files matched to the images by file stem (3-D maps or 4-D one-hot)")
    ingest.add_argument("--out", required=True, help="dataset path, e.g. real.zarr")
    ingest.add_argument("--size", default=None, metavar="N|D,H,W",
                        help="output shape, cropped or zero-padded about the volume centre (default 128)")
    ingest.add_argument("--patches", default=None, metavar="N|D,H,W",
                        help="instead of --size: patches of this shape from the whole resampled volume")
    ingest.add_argument("--per-volume", type=int, default=1, metavar="K",
                        help="with --patches: patches per volume (default 1)")
    ingest.add_argument("--min-foreground", type=float, default=0.7, metavar="F",
                        help="with --patches: foreground fraction a patch should reach (default 0.7, the best of "
                             "100 random positions otherwise)")
    ingest.add_argument("--seed", type=int, default=0, help="dataset seed: the patch positions (default 0)")
    ingest.add_argument("--spacing", type=float, default=1.5, help="output voxel size in mm (default 1.5)")
    ingest.add_argument("--intensity", default="percentile:1,99",
                        help="percentile:LO,HI per volume to [0, 1] (default percentile:1,99), ct:LO,HI "
                             "(a window, e.g. ct:-450,450), or none")
    ingest.add_argument("--reorient", default="RAS", metavar="CODES",
                        help="output axis orientation (default RAS; none keeps the source's axes)")
    ingest.add_argument("--skip-bad", action="store_true",
                        help="leave out (and list) volumes that cannot be read or fail a check, instead of stopping")
    ingest.add_argument("--backend", choices=("ray", "local"), default="ray",
                        help="ray (default: a local Ray runtime) or local (in-process)")
    ingest.add_argument("--workers", type=int, default=None, help="parallel shard tasks (default: all CPUs)")
    ingest.add_argument("--shard-size", type=int, default=None, help="volumes per shard (default: ~256 MiB)")
    ingest.add_argument("--overwrite", action="store_true", help="replace an existing synthgen dataset at --out")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_size(text: str, option: str) -> int | tuple[int, int, int]:
    """``"128"`` -> 128, ``"160,192,144"`` -> (160, 192, 144); else SynthgenError."""
    try:
        sides = tuple(int(v) for v in text.split(","))
    except ValueError:
        sides = ()
    if len(sides) not in (1, 3):
        raise SynthgenError(f"{option} must be one side or D,H,W in voxels (e.g. 128 or 160,192,144), got {text!r}")
    return sides[0] if len(sides) == 1 else sides  # type: ignore[return-value]


def cmd_ingest(args: argparse.Namespace) -> int:
    from synthgen.ingest.run import ingest, ingest_pairs

    if args.size is not None and args.patches is not None:
        raise SynthgenError("give --size (whole volumes) or --patches (patches of the whole volume), not both")
    if args.patches is None and (args.per_volume != 1 or args.min_foreground != 0.7):
        raise SynthgenError("--per-volume and --min-foreground need --patches N")
    if args.patches is not None and args.per_volume < 1:
        raise SynthgenError(f"--per-volume must be at least 1, got {args.per_volume}")
    size = parse_size(args.patches, "--patches") if args.patches else parse_size(args.size or "128", "--size")
    if args.pairs:
        if args.patches or args.labels:
            raise SynthgenError("--pairs takes its labels from the pair file and has no --patches; drop them")
        report = ingest_pairs(args.pairs, args.out, split=args.split, size=size, spacing=args.spacing,
                              intensity=args.intensity, orientation=args.reorient, skip_bad=args.skip_bad,
                              backend=args.backend, workers=args.workers, shard_size=args.shard_size,
                              overwrite=args.overwrite, progress=not args.quiet)
    else:
        report = ingest(args.images, args.out, labels=args.labels, size=size, spacing=args.spacing,
                        intensity=args.intensity, orientation=args.reorient,
                        per_volume=args.per_volume if args.patches else 0, min_foreground=args.min_foreground,
                        seed=args.seed, skip_bad=args.skip_bad, backend=args.backend, workers=args.workers,
                        shard_size=args.shard_size, overwrite=args.overwrite, progress=not args.quiet)
    for reason in report.skipped:
        print(f"synthgen ingest: skipped {reason}", file=sys.stderr)
    print(report)
    return 0
