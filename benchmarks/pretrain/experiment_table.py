"""The contrastive experiment's results as one Markdown table (``contrastive_experiment.sh``).

Run: .venv/bin/python -m benchmarks.pretrain.experiment_table WORKDIR

Reads ``WORKDIR/eval/<pairs>-<features>-<preset>/summary.json`` (written by
``synthgen-bench register``) and prints, per pair set and preset, the mean Dice, HD95, SDlogJ,
% folded voxels and TRE / EPE of MIND-SSC alone and of each pretrained run's features.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

PAIRS = ("prostate-mr-us", "oasis", "totalsegmentator-mr-ct", "random-shapes")
FEATURES = ("mind", "procedural", "real")
PRESETS = ("reference", "anatomix")
COLUMNS = (("dice", "Dice", 3), ("hd95", "HD95", 2), ("sdlogj", "SDlogJ", 2), ("fold_pct", "% J<=0", 3),
           ("tre", "TRE mm", 2), ("epe", "EPE vox", 2))


def cell(scores: dict, name: str, digits: int) -> str:
    value = scores.get(name, {}).get("mean")
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(work: Path) -> str:
    lines = ["| pairs | preset | features | n | " + " | ".join(c[1] for c in COLUMNS) + " |",
             "|---|---|---|---|" + "---|" * len(COLUMNS)]
    for pairs in PAIRS:
        for preset in PRESETS:
            for features in FEATURES:
                path = work / "eval" / f"{pairs}-{features}-{preset}" / "summary.json"
                if not path.is_file():
                    continue
                summary = json.loads(path.read_text())
                scores = summary["scores"]
                lines.append(f"| {pairs} | {preset} | {features} | {summary['pairs'] - len(summary['failed'])} | "
                             + " | ".join(cell(scores, name, digits) for name, _, digits in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    print(table(parser.parse_args().work))


if __name__ == "__main__":
    main()
