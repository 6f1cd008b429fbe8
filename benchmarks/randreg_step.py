"""What one randreg training step costs: making its random-shapes pair on the training device
against the network's forward and backward (Chen et al. generate every pair on the GPU).

Run: .venv/bin/python -m benchmarks.randreg_step [--size 224] [--device auto] [--steps 3]
     [--model paper|tiny] [--json OUT]

Per step, side by side on one device: (1) the pair, ``generate:random-shapes?size=S`` rendered
by DeviceStage from its index (what ``--data generate:...`` does each step); (2) the recipe's
training step (average pooling, network, flow upsampling, warp, losses) forward and backward,
with an AdamW update. Reported: the median seconds of each over ``--steps`` steps (after one
warm-up), and generation as a fraction of the whole step (target: at most 10% at the paper's
size on the same device).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from pretrain.config import build_config
from pretrain.recipes.randreg import RandRegRecipe
from synthgen.stream import DeviceStage, ShardStream

TINY = {"model.embed_dim": 12, "model.depths": [1, 1, 1], "model.num_heads": [2, 2, 2], "model.width": 4}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(size: int, device: torch.device, steps: int, model: str) -> dict[str, float]:
    spec = f"generate:random-shapes?n={steps + 1}&size={size}&seed=0"
    config = build_config(RandRegRecipe, overrides={"data.path": spec, **(TINY if model == "tiny" else {})})
    recipe = RandRegRecipe(config.model, config.recipe)
    network = recipe.build()["model"].to(device).train()
    optimiser = torch.optim.AdamW(network.parameters(), lr=4e-4)
    stream, stage = ShardStream(spec, shuffle=False, batch_size=1), DeviceStage(spec)
    generate, step = [], []
    for i, batch in enumerate(stream):
        _sync(device)
        started = time.perf_counter()
        ready = stage(batch, device)
        _sync(device)
        made = time.perf_counter()
        losses = recipe.training_step({"model": network}, ready, torch.Generator().manual_seed(i))
        optimiser.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimiser.step()
        _sync(device)
        done = time.perf_counter()
        if i > 0:  # the first step warms up kernels and allocators
            generate.append(made - started)
            step.append(done - made)
    gen, train = statistics.median(generate), statistics.median(step)
    return {"size": size, "device": str(device), "model": model, "steps": len(step), "generate_s": gen,
            "train_step_s": train, "generate_fraction": gen / (gen + train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--model", choices=("paper", "tiny"), default="paper")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    result = measure(args.size, device, args.steps, args.model)
    print(f"randreg step at {args.size}^3 on {device} ({args.model} network): pair {result['generate_s']:.3f} s, "
          f"forward+backward+update {result['train_step_s']:.3f} s, generation "
          f"{100 * result['generate_fraction']:.1f}% of the step")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
