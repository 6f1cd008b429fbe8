"""A pretraining experiment's harness results as one Markdown table (``contrastive_experiment.sh``,
``randreg_experiment.sh``).

Run: .venv/bin/python -m benchmarks.pretrain.experiment_table WORKDIR

Reads every ``WORKDIR/eval/<run>/summary.json`` (written by ``synthgen-bench register``; ``<run>``
names the pairs, the method or features and the preset, e.g. ``oasis-mind-reference``) and prints
one row per run in name order: the pairs scored, the mean initial and final Dice, HD95, SDlogJ,
% folded voxels, TRE / EPE and seconds per pair.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

COLUMNS = (("dice_initial", "Dice before", 3), ("dice", "Dice", 3), ("hd95", "HD95", 2), ("sdlogj", "SDlogJ", 2),
           ("fold_pct", "% J<=0", 3), ("tre", "TRE mm", 2), ("epe", "EPE vox", 2), ("seconds", "s/pair", 1))


def cell(scores: dict, name: str, digits: int) -> str:
    value = scores.get(name, {}).get("mean")
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(work: Path) -> str:
    lines = ["| run | n | " + " | ".join(c[1] for c in COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for path in sorted((work / "eval").glob("*/summary.json")):
        summary = json.loads(path.read_text())
        scores = summary["scores"]
        lines.append(f"| {path.parent.name} | {summary['pairs'] - len(summary['failed'])} | "
                     + " | ".join(cell(scores, name, digits) for name, _, digits in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    print(table(parser.parse_args().work))


if __name__ == "__main__":
    main()
