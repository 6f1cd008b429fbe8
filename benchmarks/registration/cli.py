"""The ``synthgen-bench`` command. Every error is one line on stderr and a non-zero exit.

``synthgen-bench register --pairs PAIRS --features SPEC --out DIR`` registers every pair with
ConvexAdam driven by the features, and writes ``pairs.csv``, ``summary.json``, ``summary.md``,
``dice_boxplot.png`` and ``overlay_<pair>.png`` for the first few pairs (with ``--save-fields``
also each pair's displacement in ``fields/``, see :mod:`benchmarks.registration.fields`). With
``--grid`` it first searches a small hyper-parameter grid on validation pairs (``--val-pairs``,
or the first ``--val-count`` pairs of ``--pairs``, which are then left out of the scored set),
writes ``grid.csv`` and registers the rest with the chosen setting. ``--preset`` picks named
ConvexAdam settings (:mod:`benchmarks.registration.presets`) that ``--set`` overrides, and
``--intensity-window`` windows the images before the features
(:mod:`benchmarks.registration.window`). ``--method net:CKPT`` registers with a trained network
instead (:mod:`registration.network_inference`), optionally refined by ``--set io_steps=N``
Adam iterations of ConvexAdam on the features.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


from benchmarks.registration import fields
from benchmarks.registration import grid as grid_search
from benchmarks.registration import plots
from benchmarks.registration.presets import PRESETS, preset_params
from benchmarks.registration.report import write_outputs
from benchmarks.registration.run import PairResult, Registered, register_with_network, run_pairs, warped_image
from benchmarks.registration.sources import PairSource, open_pairs
from benchmarks.registration.window import parse_windows, windowed
from registration.convexadam import ConvexAdamParams
from registration.features import EXTRACTOR_NAMES, get_extractor
from registration.networks import load_network
from synthgen.cli import OneLineParser, dispatch, parse_overrides
from synthgen.config_values import field_names, parse_value, unknown_keys
from synthgen.devices import resolve_device
from synthgen.errors import SynthgenError
from synthgen.store.output_paths import check_output_path

EXIT_PAIRS_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="synthgen-bench", description=(
        "Score feature extractors by registering real or synthetic pairs with ConvexAdam."))
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    reg = commands.add_parser("register", help="register pairs and score the result")
    reg.add_argument("--pairs", required=True, help=(
        "pairs CSV (fixed, moving, fixed_labels, moving_labels[, fixed_landmarks, "
        "moving_landmarks, name]), a Learn2Reg dataset.json, a random-shapes dataset, or "
        "random-shapes:N[,size=S,seed=K,start=I] for pairs generated in memory"))
    reg.add_argument("--features", default="mind", help=(
        f"feature extractor: one of {', '.join(EXTRACTOR_NAMES)}, written NAME[:ARG][,key=value...], "
        f"e.g. mind, ckpt:model.pt,mind=true, slice2d:enc.pt,every=4,pca=12 (default mind)"))
    reg.add_argument("--method", default="convexadam", help=(
        "convexadam (default: ConvexAdam on --features), or net:CKPT, a registration network "
        "(synthgen-pretrain randreg or randreg-finetune RUN/features.pt) predicting each pair's "
        "field; --set io_steps=N refines it with N Adam iterations of ConvexAdam on --features"))
    reg.add_argument("--out", required=True, help="results directory")
    reg.add_argument("--preset", default="reference", help=(
        f"named ConvexAdam settings that --set overrides: {', '.join(PRESETS)} (default "
        f"reference: grid_sp 6, disp_hw 4, lambda_weight 1.25; anatomix: the published anatomix "
        f"solver, grid_sp 2, disp_hw 1, lambda_weight 0.75, cost_reduction sum)"))
    reg.add_argument("--intensity-window", dest="windows", action="append", default=[],
                     metavar="[fixed:|moving:]LOW,HIGH", help=(
                         "clip the images (or only the fixed or moving one) to [LOW, HIGH] and map "
                         "them to [0, 1] before the features, e.g. --intensity-window=-450,450 for CT "
                         "in HU (with '=' when LOW is negative)"))
    reg.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="ConvexAdam hyper-parameter, e.g. --set grid_sp=4 --set niter=40")
    reg.add_argument("--grid", action="store_true",
                     help="tune ConvexAdam on validation pairs first and use the chosen setting")
    reg.add_argument("--grid-values", action="append", default=[], metavar="KEY=V1,V2",
                     help=("a grid axis over any --set key, e.g. grid_sp=2,4,6, disp_hw=1,4, "
                           "ic=true,false, cost_reduction=mean12,sum (default grid: grid_sp=4,6 and "
                           "lambda_weight=0.5,1.25,2.5)"))
    reg.add_argument("--val-pairs", default=None, help="validation pairs for --grid (same forms as --pairs)")
    reg.add_argument("--val-count", type=int, default=2,
                     help="without --val-pairs: the first N pairs validate and are not scored (default 2)")
    reg.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    reg.add_argument("--overlays", type=int, default=3, help="overlay PNGs for the first N pairs (default 3)")
    reg.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    reg.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    reg.add_argument("--save-fields", action="store_true", help=(
        "also write each pair's displacement to OUT/fields/ in the Learn2Reg format "
        "(disp_FIX_MOV.nii.gz, (D, H, W, 3) float32 voxels), for Learn2Reg's evaluation.py"))
    return parser


def params_from(overrides: Sequence[str], preset: str = "reference") -> ConvexAdamParams:
    """The ``preset``'s ConvexAdamParams with ``--set`` overrides; unknown keys name the valid
    ones."""
    values = parse_overrides(overrides)
    unknown = sorted(unknown_keys(ConvexAdamParams, values))
    if unknown:
        raise SynthgenError(f"--set {unknown[0]}: no such ConvexAdam hyper-parameter; "
                            f"valid ones are {', '.join(field_names(ConvexAdamParams))}")
    return preset_params(preset, values)


def grid_from(values: Sequence[str], base: ConvexAdamParams) -> dict[str, tuple[Any, ...]]:
    """``["grid_sp=2,4", "ic=true,false"]`` -> ``{"grid_sp": (2, 4), "ic": (True, False)}``; the
    default grid when empty. Every value is checked on ``base`` (SynthgenError naming it)."""
    if not values:
        return dict(grid_search.DEFAULT_GRID)
    valid = field_names(ConvexAdamParams)
    grid = {}
    for text in values:
        key, sep, items = text.partition("=")
        if not sep or key not in valid or not items:
            raise SynthgenError(f"--grid-values {text!r}: expected KEY=V1,V2 with KEY one of "
                                f"{', '.join(valid)}")
        grid[key] = tuple(parse_value(v) for v in items.split(","))
        for value in grid[key]:
            try:
                dataclasses.replace(base, **{key: value})
            except (TypeError, ValueError) as err:
                raise SynthgenError(f"--grid-values {text!r}: {err}") from None
    return grid


def check_out(out: str, overwrite: bool) -> None:
    """Refuse (SynthgenError, nothing created) an ``--out`` that cannot be written, or that holds
    an earlier run's results unless ``overwrite`` (which writes over them and deletes nothing)."""
    check_output_path(out, "results", folder=True, example=".d")
    if os.path.exists(os.path.join(out, "summary.json")) and not overwrite:
        raise SynthgenError(f"--out {out} already holds results; choose another directory or "
                            f"pass --overwrite")


def _overlay_writer(out: str, count: int, features: str):
    written = []

    def write(registered: Registered, result: PairResult) -> None:
        if len(written) >= count:
            return
        pair = registered.bench.pair
        dice = result.scores.get("dice", float("nan"))
        path = os.path.join(out, f"overlay_{fields.safe_name(pair.name)}.png")
        plots.overlay(pair.fixed, pair.moving, warped_image(registered), pair.fixed_labels,
                      pair.moving_labels, registered.warped_labels, pair.spacing, path,
                      f"{pair.name}, features {features}: mean Dice {dice:.3f}")
        written.append(path)

    return write


def _field_writer(out: str, sources: Sequence[PairSource]):
    """A callback writing each registered pair's field to ``out`` (made on the first write) under
    its Learn2Reg name; refuses up front two pairs that would share a file."""
    names = {s.name: fields.field_name(s.name, s.images) for s in sources}
    fields.check_unique(names)

    def write(registered: Registered, result: PairResult) -> None:
        pair = registered.bench.pair
        fields.write_field(os.path.join(out, names[pair.name]), registered.displacement, pair.spacing, pair.affine)

    return write


def _each(writers: Sequence[Callable[[Registered, PairResult], None]]
          ) -> Callable[[Registered, PairResult], None]:
    def write(registered: Registered, result: PairResult) -> None:
        for writer in writers:
            writer(registered, result)
    return write


def _write_grid(rows: list[dict[str, Any]], path: str) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def network_method(method: str, overrides: list[str]) -> tuple[str | None, int, list[str]]:
    """(checkpoint of ``net:CKPT`` or None, io_steps, the ConvexAdam overrides left)."""
    steps = [o for o in overrides if o.partition("=")[0].strip() == "io_steps"]
    rest = [o for o in overrides if o not in steps]
    if method == "convexadam":
        if steps:
            raise SynthgenError("--set io_steps applies to --method net:CKPT (refining a network's field)")
        return None, 0, rest
    if not method.startswith("net:") or not method[4:]:
        raise SynthgenError(f"--method {method!r}: use convexadam or net:CKPT (a registration network checkpoint)")
    try:
        io_steps = int(steps[-1].partition("=")[2]) if steps else 0
    except ValueError:
        raise SynthgenError(f"--set {steps[-1]}: io_steps must be an integer >= 0") from None
    if io_steps < 0:
        raise SynthgenError(f"--set io_steps={io_steps}: must be >= 0")
    return method[4:], io_steps, rest


def cmd_register(args: argparse.Namespace) -> int:
    check_out(args.out, args.overwrite)
    checkpoint, io_steps, args.overrides = network_method(args.method, args.overrides)
    params = params_from(args.overrides, args.preset)
    grid = grid_from(args.grid_values, params) if args.grid else None
    windows = parse_windows(args.windows)
    device = resolve_device(args.device, "--device")
    extractor = windowed(get_extractor(args.features, device), windows)
    register_pair = None
    if checkpoint is not None:
        if args.grid:
            raise SynthgenError("--grid tunes ConvexAdam's convex stage; it does not apply to --method net:")
        network, settings = load_network(checkpoint)
        network = network.to(device)
        register_pair = functools.partial(register_with_network, network=network,
                                          input_scale=int(settings.get("input_scale", 1)), extractor=extractor,
                                          params=params, io_steps=io_steps, device=device)
    sources = open_pairs(args.pairs)[:args.limit]
    if not sources:
        raise SynthgenError(f"--pairs {args.pairs} lists no pairs")
    writers = [_overlay_writer(args.out, args.overlays, args.features)]
    if args.save_fields:
        writers.append(_field_writer(os.path.join(args.out, "fields"), sources))
    os.makedirs(args.out, exist_ok=True)
    header: dict[str, Any] = {"pairs_source": args.pairs, "method": args.method, "io_steps": io_steps,
                              "features": args.features,
                              "device": str(device), "preset": args.preset,
                              "intensity_window": windows}
    if grid is not None:
        if args.val_pairs is not None:
            validation = open_pairs(args.val_pairs)
        else:
            if args.val_count < 1 or args.val_count >= len(sources):
                raise SynthgenError(f"--grid needs validation pairs: --val-count {args.val_count} "
                                    f"of {len(sources)} pairs leaves none to score; pass --val-pairs")
            validation, sources = sources[:args.val_count], sources[args.val_count:]
        outcome = grid_search.search(validation, extractor, params, device, grid)
        _write_grid(outcome.rows, os.path.join(args.out, "grid.csv"))
        params = dataclasses.replace(params, **outcome.chosen)
        header["grid"] = {"validation": [s.name for s in validation], "values": grid,
                          "chosen": outcome.chosen}
        print(f"grid: chosen {outcome.chosen} on {len(validation)} validation pairs")
    header["params"] = dataclasses.asdict(params)
    results = run_pairs(sources, extractor, params, device, on_registered=_each(writers), register_pair=register_pair)
    table = write_outputs(results, args.out, header)
    plots.dice_boxplot(results, os.path.join(args.out, "dice_boxplot.png"),
                       f"{args.features} on {os.path.basename(args.pairs.rstrip('/'))}")
    print(table)
    failed = [r for r in results if r.error]
    for result in failed:
        print(f"synthgen-bench register: pair {result.name} failed: {result.error}", file=sys.stderr)
    if failed:
        print(f"synthgen-bench register: error: {len(failed)} of {len(results)} pairs failed "
              f"(listed in {os.path.join(args.out, 'summary.json')})", file=sys.stderr)
        return EXIT_PAIRS_FAILED
    return 0


COMMANDS = {"register": cmd_register}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("synthgen-bench", COMMANDS, build_parser().parse_args(argv), "interrupted")


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
