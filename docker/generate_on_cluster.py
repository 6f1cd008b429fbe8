"""Run ``synthgen generate`` on the Ray cluster this script runs in, for ``ray submit``:

    ray submit docker/cluster.yaml docker/generate_on_cluster.py -- \\
        --engine label-ensemble --n 120000 --out s3://BUCKET/shards.zarr [--gpus-per-task 0.25]

``ray submit`` copies the script to the head node and runs it there with the image's Python; the
generate command joins the cluster (``--ray-address auto`` unless given) and its shard tasks
spread over every node. The arguments are those of ``synthgen generate``; the exit status is its.
"""

from __future__ import annotations

import sys

from synthgen.cli import main


def cluster_arguments(argv: list[str]) -> list[str]:
    """``synthgen`` arguments for ``generate ARGV``, joining the surrounding cluster by default."""
    joins = any(arg == "--ray-address" or arg.startswith("--ray-address=") for arg in argv)
    return ["generate", *argv, *([] if joins else ["--ray-address", "auto"])]


if __name__ == "__main__":
    sys.exit(main(cluster_arguments(sys.argv[1:])))
