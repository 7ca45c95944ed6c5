"""Where the demo model learns: weighted validation error per noise level, with the edge control and without.

A single-process training loop over `demo_edge_tiny` (same model, data and EDM loss as the trainer; plain AdamW with
the experiment's lr and `trainer.lr_multipliers`, no EMA, no FSDP), printing every `--every` steps, for each sigma,
"error with control / error with control weight 0". Equal numbers at high sigma mean the control does not shape the
layout; ~1.0 at small sigma means the net returns its input (no denoising). BENCHMARKS.md has the figures.

    .venv/bin/python benchmarks/demo_noise_levels.py --iters 1500 --batch 4
    .venv/bin/python benchmarks/demo_noise_levels.py --iters 1500 -- 'trainer.lr_multipliers={*adaLN_modulation*: 1.0, *t_embedder*: 1.0}'
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import default_collate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from configs.train import make_config  # noqa: E402
from cosmos_transfer.diffusion import edm  # noqa: E402
from cosmos_transfer.inference import loading  # noqa: E402
from cosmos_transfer.trainer.param_groups import lr_param_groups, scale_group_rates  # noqa: E402
from cosmos_transfer.trainer.trainer import instantiate  # noqa: E402

SIGMAS = (0.05, 0.2, 0.5, 1.0, 3.0, 10.0)


@torch.no_grad()
def errors_per_sigma(model, batch: dict, seed: int = 1) -> list[tuple[float, float, float]]:
    """(sigma, weighted error with control, weighted error with control weight 0) on `batch`, fixed noise."""
    model.eval()
    x0 = model.latent_from_batch(model._batch_to_device(dict(batch)))
    conditions = []
    for weight in (None, 0.0):
        b = dict(batch)
        if weight is not None:
            b["control_weight"] = weight
        conditions.append(model._extend_condition(b, model.conditioner(b)))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    rows = []
    for sigma in SIGMAS:
        weight = float(edm.loss_weight(torch.tensor(sigma), model.sigma_data))
        with_ctrl, without = (float(((model.denoise(x0 + sigma * noise, sigma, c) - x0) ** 2).mean()) * weight
                              for c in conditions)
        rows.append((sigma, with_ctrl, without))
    model.train()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="demo_edge_tiny")
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = loading.compose_config(args.experiment, args.overrides, make_config=make_config)
    model = loading.build_model(config).train()
    train_set = instantiate(config.dataloader_train["dataset"])
    val_set = instantiate(config.dataloader_val["dataset"])
    params = model.trainable_parameters()
    groups = lr_param_groups(model, params, dict(config.trainer.lr_multipliers))
    optimizer = torch.optim.AdamW(groups, lr=float(config.optimizer["lr"]),
                                  weight_decay=float(config.optimizer["weight_decay"]), betas=(0.9, 0.99))
    scale_group_rates(optimizer)
    base_rates = [g["lr"] for g in optimizer.param_groups]
    warm_up = int(config.scheduler["warm_up_steps"][0]) if config.scheduler else 0
    val_batch = default_collate([val_set[i] for i in range(min(4, len(val_set)))])
    rng = np.random.default_rng(0)
    started = time.time()
    losses = []
    print(f"{args.experiment} {' '.join(args.overrides)}: {sum(p.numel() for p in params):,} trainable parameters; "
          "columns: sigma: error with control / without", flush=True)
    for step in range(1, args.iters + 1):
        for group, rate in zip(optimizer.param_groups, base_rates):
            group["lr"] = rate * min(1.0, step / max(warm_up, 1))
        batch = default_collate([train_set[int(i)] for i in rng.integers(0, len(train_set), args.batch)])
        loss, metrics = model.training_step(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(metrics["mse"]))
        if step % args.every == 0 or step == args.iters:
            rows = errors_per_sigma(model, val_batch)
            print(f"step {step} ({time.time() - started:.0f} s) train mse {np.mean(losses[-args.every:]):.3f} | "
                  + " ".join(f"{s:g}: {a:.3f}/{b:.3f}" for s, a, b in rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
