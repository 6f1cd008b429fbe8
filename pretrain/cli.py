"""The ``synthgen-pretrain`` command. Every error is one line on stderr and exit status 2; Ctrl-C
(SIGINT) or SIGTERM saves a checkpoint and exits 130 (143).

    synthgen-pretrain RECIPE --data PATH --out RUN [--config PRESET_OR_FILE] [--set section.key=value ...]
                      [--steps N] [--stop-after N] [--resume] [--print-config]
    synthgen-pretrain export RUN_OR_CHECKPOINT --out features.pt [--which {best,last}]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pretrain.config import SECTIONS, RunConfig, build_config
from pretrain.export import WHICH, export_features
from pretrain.loop import TrainingInterrupted, train
from pretrain.registry import get_recipe, recipe_names
from synthgen.cli import EXIT_INTERRUPTED, OneLineParser, parse_overrides, run_command
from synthgen.config_values import field_names
from synthgen.errors import SynthgenError
from synthgen.store.output_paths import check_output_path

PROG = "synthgen-pretrain"


def build_train_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=(
        f"Pretrain a network on a synthgen dataset. Recipes: {', '.join(recipe_names())}. "
        f"Config layers: loop defaults < recipe defaults < --config < --set. "
        f"Re-export features from a run with `{PROG} export RUN --out features.pt`."))
    parser.add_argument("recipe", help="recipe name (e.g. contrastive) or package.module:Class")
    parser.add_argument("--data", default=None, help="dataset path, URL or generate: spec, or a mix "
                        "\"synth.zarr:0.8,real.zarr:0.2\" (required unless --resume)")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, logs, features.pt)")
    parser.add_argument("--config", default=None, metavar="PRESET_OR_FILE",
                        help="a preset (tiny, default, ...) or a JSON/YAML file of config sections")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help=f"config override (repeatable; sections {', '.join(SECTIONS)}), e.g. --set optim.lr=1e-3")
    parser.add_argument("--steps", type=int, default=None, help="shorthand for --set train.steps=N")
    parser.add_argument("--init", default=None, metavar="RUN_OR_CKPT",
                        help="pretrained weights to start from, or none (recipes with model.init, e.g. "
                             "randreg-finetune); shorthand for --set model.init=...")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="pause after step N (checkpoint saved; the schedule still spans train.steps); "
                             "continue with --resume")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out exactly where its last checkpoint left it")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    return parser


def build_export_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=f"{PROG} export", description=(
        "Write the feature checkpoint of a run or of one checkpoint file, as the recipe exports it at "
        "the end of training. From a run directory: its best.pt (lowest validation loss, the paper's "
        "choice) where there is one, else its last.pt."))
    parser.add_argument("run", help="run directory or checkpoint file (e.g. RUN/step-00001000.pt)")
    parser.add_argument("--out", required=True, help="feature checkpoint to write, e.g. features.pt")
    parser.add_argument("--which", choices=tuple(WHICH), default=None,
                        help="for a run directory: best.pt or last.pt (default: best.pt where there is one)")
    return parser


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Layer the config for a training command. Resuming without --config starts from the run's
    saved config (so only what --set/--data/--steps change is compared with it)."""
    recipe_cls = get_recipe(args.recipe)
    overrides = parse_overrides(args.overrides)
    if args.init is not None and "init" not in field_names(recipe_cls.ModelConfig):
        raise SynthgenError(f"recipe {recipe_cls.name} takes no --init (it trains from scratch)")
    for key, value in (("data.path", args.data), ("train.steps", args.steps), ("model.init", args.init)):
        if value is not None:
            overrides[key] = value
    saved = Path(args.out) / "config.json"
    if args.resume and args.config is None and saved.is_file():
        try:
            base = json.loads(saved.read_text())
        except json.JSONDecodeError as err:
            raise SynthgenError(f"{saved} is not valid JSON ({err}); give the run's --config again") from None
        return build_config(recipe_cls, None, overrides, base=base)
    return build_config(recipe_cls, args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    if args.stop_after is not None and args.stop_after < 1:
        raise SynthgenError(f"--stop-after must be >= 1, got {args.stop_after}")
    config = resolve_config(args)
    if args.print_config:
        print(config.to_json())
        return 0
    summary = train(args.recipe, config, args.out, resume=args.resume, stop_after=args.stop_after)
    if summary["checkpoint"] is not None:
        state = "finished" if summary["finished"] else "paused; continue with --resume"
        features = f", features {summary['features']}" if summary["features"] else ""
        print(f"{args.out}: step {summary['step']}/{config.train.steps} ({state}), checkpoint "
              f"{summary['checkpoint']}{features}, {summary['seconds']:.1f} s")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    check_output_path(args.out, "feature checkpoint", folder=False, example="features.pt")
    print(export_features(args.run, args.out, args.which).describe())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status (0, 2 for
    an error, 128 + the signal number after SIGINT/SIGTERM)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    export = bool(argv) and argv[0] == "export"
    prog = f"{PROG} export" if export else PROG
    args = build_export_parser().parse_args(argv[1:]) if export else build_train_parser().parse_args(argv)
    return run_command(prog, lambda: cmd_export(args) if export else cmd_train(args), stopped)


def stopped(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The line and exit status of a run stopped by a signal (checkpoint saved) or by ctrl-c."""
    if isinstance(exc, TrainingInterrupted):
        return (f"{exc.signal_name} at step {exc.step}; checkpoint saved to {exc.checkpoint}; continue with "
                f"--resume", 128 + signal.Signals[exc.signal_name].value)
    return "interrupted; continue from the last checkpoint with --resume", EXIT_INTERRUPTED


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
