#!/usr/bin/env python
"""Pretrain the demo's tiny base once, and write it as NVIDIA ships a Cosmos-Transfer1 base (`base_model.pt`).

    .venv/bin/python scripts/pretrain_demo_base.py --out assets/demo        # ~1 h on a shared 2-core CPU machine
    .venv/bin/python scripts/pretrain_demo_base.py --latent-stats  # print the DCT tokenizer's per-channel statistics
    -> assets/demo/base_model.pt (base_model.net.* + base_model.logvar.*, bfloat16), assets/demo/MODEL_CARD.md,
       assets/demo/base_samples.gif (generated | ground truth for validation captions)

The net is experiment `demo_base_tiny` (experiments/demo.py: the base of `demo_edge_tiny`, a text2world GeneralDIT
over the DCT tokenizer). It learns from a larger draw of the demo generator (`--clips` clips made by
cosmos_transfer/data/demo.py, the same code and seeds as datasets/demo/train, which are its first 48) so that it draws
shapes anywhere, not the 48 training clips by heart; validation uses the same 8 clips as datasets/demo/val.
`make demo` post-trains an edge branch on the shipped file; rerunning this script with the same arguments and seed
reproduces it (same torch version, same thread count: CPU float sums depend on both).

The loop is single-process plain AdamW (the experiment's lr, warm-up and `trainer.lr_multipliers`, then a cosine
decay to 1/10 that settles the weights for the low-noise steps) with the experiment's power EMA, whose weights are
the ones written.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402

from configs.train import make_config  # noqa: E402
from cosmos_transfer.checkpoints import transfer1  # noqa: E402
from cosmos_transfer.data.demo import make_demo_dataset  # noqa: E402
from cosmos_transfer.diffusion import edm  # noqa: E402
from cosmos_transfer.ema import PowerEMA  # noqa: E402
from cosmos_transfer.inference import loading  # noqa: E402
from cosmos_transfer.trainer.param_groups import lr_param_groups, scale_group_rates  # noqa: E402
from cosmos_transfer.trainer.trainer import instantiate  # noqa: E402

EXPERIMENT = "demo_base_tiny"
SIGMAS = (0.05, 0.2, 0.5, 1.0, 3.0, 10.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="assets/demo", help="folder for base_model.pt, MODEL_CARD.md and samples")
    parser.add_argument("--data", default="datasets/demo_pretrain", help="where the pretraining clips are made")
    parser.add_argument("--clips", type=int, default=512, help="training clips drawn from the demo generator")
    parser.add_argument("--iters", type=int, default=8000)
    parser.add_argument("--stop-after", type=int, default=0,
                        help="end (and write the outputs) after this many of the --iters steps, the learning-rate "
                        "schedule still that of --iters (0: run them all); the weights equal that step's snapshot")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine 2 threads ran 6x slower per step)")
    parser.add_argument("--every", type=int, default=250, help="print the losses every N steps")
    parser.add_argument("--snapshot-every", type=int, default=1000,
                        help="also write the EMA weights so far to snapshot_base_model.pt every N steps (0: never)")
    parser.add_argument("--latent-stats", action="store_true",
                        help="only measure and print the DCT tokenizer's per-channel latent mean and std on the "
                        "pretraining clips (experiments/demo.py holds them as _LATENT_MEAN / _LATENT_STD)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="of the written file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the experiment (after --)")
    return parser


@torch.no_grad()
def errors_per_sigma(model, batch: dict, seed: int = 1) -> list[tuple[float, float]]:
    """(sigma, EDM-weighted denoising error) on `batch` with fixed noise: ~1 means the net returns its input."""
    model.eval()
    x0 = model.latent_from_batch(model._batch_to_device(dict(batch)))
    condition = model._extend_condition(batch, model.conditioner(batch))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    rows = []
    for sigma in SIGMAS:
        weight = float(edm.loss_weight(torch.tensor(sigma), model.sigma_data))
        rows.append((sigma, float(((model.denoise(x0 + sigma * noise, sigma, condition) - x0) ** 2).mean()) * weight))
    model.train()
    return rows


@torch.no_grad()
def sample_figures(model, batch: dict, num_steps: int = 12, seed: int = 1) -> tuple[np.ndarray, dict[str, float]]:
    """Generate the batch's captions; returns frames [B, T, H, W, 3] uint8 (generated above ground truth) and the
    pixel statistics of generated vs ground truth (a base that draws clean shapes matches their spread)."""
    model.eval()
    latents = model.generate_samples(batch, num_steps=num_steps, guidance=0.0, seed=seed)
    generated = model.decode(latents).clamp(-1, 1)
    truth = batch["video"].float() / 127.5 - 1.0
    model.train()
    stats = {"generated_std": float(generated.std()), "truth_std": float(truth.std()),
             "generated_mean": float(generated.mean()), "truth_mean": float(truth.mean())}
    both = torch.cat([generated, truth], dim=3)  # [B, 3, T, 2H, W]
    frames = ((both + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    return frames, stats


def write_gif(path: str, frames: np.ndarray, scale: int = 3) -> None:
    """Clips side by side, each frame enlarged `scale` times (nearest) so the shapes are visible."""
    from PIL import Image

    row = np.concatenate(list(frames), axis=2)  # [T, H, B*W, 3]
    images = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in row]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)


class _Batches(torch.utils.data.Dataset):
    """Batch k = the samples `draws[k]` of `dataset`, collated (a DataLoader worker builds them ahead)."""

    def __init__(self, dataset, draws: list[list[tuple[int, int]]]):
        self.dataset, self.draws = dataset, draws

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, index: int) -> dict:
        return default_collate([self.dataset[key] for key in self.draws[index]])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    if not os.path.isdir(os.path.join(args.data, "train")):
        make_demo_dataset(args.data, num_train=args.clips, num_val=8)
        print(f"made {args.clips} + 8 clips in {args.data} ({time.time() - started:.0f} s)", flush=True)

    overrides = [f"dataloader_train.dataset.root={args.data}/train", f"dataloader_val.dataset.root={args.data}/val",
                 f"trainer.seed={args.seed}", *args.overrides]
    config = loading.compose_config(EXPERIMENT, overrides, make_config=make_config)
    train_set = instantiate(config.dataloader_train["dataset"])
    if args.latent_stats:
        print_latent_stats(train_set)
        return 0
    model = loading.build_model(config).train()
    val_set = instantiate(config.dataloader_val["dataset"])
    if len(train_set) < args.clips:
        raise SystemExit(f"{args.data}/train has {len(train_set)} clips, expected {args.clips}: remove the folder "
                         "so that it is made again")
    params = model.trainable_parameters()
    groups = lr_param_groups(model, params, dict(config.trainer.lr_multipliers))
    optimizer = torch.optim.AdamW(groups, lr=float(config.optimizer["lr"]),
                                  weight_decay=float(config.optimizer["weight_decay"]), betas=(0.9, 0.99))
    scale_group_rates(optimizer)
    base_rates = [g["lr"] for g in optimizer.param_groups]
    warm_up = int(config.scheduler["warm_up_steps"][0])
    ema = PowerEMA(model, s=0.1)
    val_batch = default_collate([val_set[i] for i in range(len(val_set))])
    # Which clips each step reads, drawn up front; a sample key (step, clip) gives each draw its own random window.
    rng = np.random.default_rng(args.seed)
    draws = [[(step, int(i)) for i in rng.integers(0, len(train_set), args.batch)] for step in range(args.iters)]
    loader = torch.utils.data.DataLoader(_Batches(train_set, draws), batch_size=None, num_workers=1,
                                         prefetch_factor=4)  # one worker decodes while the step runs
    losses: list[float] = []
    log: list[str] = []
    print(f"{EXPERIMENT}: {sum(p.numel() for p in params):,} parameters, {len(train_set)} clips, {args.iters} steps "
          f"of batch {args.batch}", flush=True)
    for step, batch in enumerate(loader, start=1):
        progress = step / args.iters
        factor = min(1.0, step / warm_up) * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
        for group, rate in zip(optimizer.param_groups, base_rates):
            group["lr"] = rate * factor
        loss, metrics = model.training_step(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.update(step - 1)
        losses.append(float(metrics["mse"]))
        if step % args.every == 0 or step in (args.iters, args.stop_after):
            with ema.swapped_in():
                rows = errors_per_sigma(model, val_batch)
            line = (f"step {step} ({time.time() - started:.0f} s) train mse {np.mean(losses[-args.every:]):.4f} | "
                    "val (EMA) weighted error at sigma " + " ".join(f"{s:g}: {e:.3f}" for s, e in rows))
            print(line, flush=True)
            log.append(line)
        if step == args.stop_after:
            break
        if args.snapshot_every and step % args.snapshot_every == 0 and step < args.iters:
            with ema.swapped_in():
                torch.save(_official_base(model, torch.float32), os.path.join(args.out, "snapshot_base_model.pt"))

    with ema.swapped_in():
        rows = errors_per_sigma(model, val_batch)
        frames, stats = sample_figures(model, default_collate([val_set[i] for i in range(4)]))
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = os.path.join(args.out, transfer1.BASE_FILE)
    torch.save(_official_base(model, getattr(torch, args.dtype), state), path)
    snapshot = os.path.join(args.out, "snapshot_base_model.pt")
    if os.path.exists(snapshot):
        os.remove(snapshot)
    gif = os.path.join(args.out, "base_samples.gif")
    write_gif(gif, frames)
    elapsed = time.time() - started
    write_card(os.path.join(args.out, "MODEL_CARD.md"), args, path, rows, stats, log, elapsed, len(params),
               (float(config.model["p_mean"]), float(config.model["p_std"])))
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB), {gif}, MODEL_CARD.md in {elapsed / 60:.1f} min",
          flush=True)
    return 0


def print_latent_stats(train_set) -> None:
    """The per-channel mean and std of the plain DCT tokenizer's latents over one window of every pretraining clip."""
    from cosmos_transfer.tokenizers.dct import DCTTokenizer, channel_stats

    videos = (train_set[i]["video"][None].float() / 127.5 - 1.0 for i in range(len(train_set)))
    mean, std = channel_stats(DCTTokenizer(), videos)
    print(f"_LATENT_MEAN = {[round(m, 4) for m in mean]}\n_LATENT_STD = {[float(f'{s:.4g}') for s in std]}")


def _official_base(model, dtype: torch.dtype, state: dict | None = None) -> dict[str, torch.Tensor]:
    """The model's weights in NVIDIA's base_model.pt layout (base_model.net.*, base_model.logvar.*), cast to dtype."""
    state = state if state is not None else {k: v.detach().clone() for k, v in model.state_dict().items()}
    (weights,) = transfer1.to_official(state).files.values()
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}


def write_card(path: str, args, weights_path: str, rows, stats: dict, log: list[str], elapsed: float,
               num_tensors: int, noise: tuple[float, float]) -> None:
    size = os.path.getsize(weights_path)
    command = " ".join(["scripts/pretrain_demo_base.py", *sys.argv[1:]]) if sys.argv[1:] else \
        "scripts/pretrain_demo_base.py"
    lines = [
        "# Demo base model (`base_model.pt`)",
        "",
        f"A tiny text2world GeneralDIT (experiment `{EXPERIMENT}`, experiments/demo.py: 2 blocks x 192 channels, 3 "
        "heads, patch 1, over the DCT tokenizer's 24 latent channels, each standardized to unit std with the per-channel "
        "statistics of experiments/demo.py; no control branch), in NVIDIA's Cosmos-Transfer1 "
        "`base_model.pt` layout (`base_model.net.*` + `base_model.logvar.*`, read by "
        "cosmos_transfer/checkpoints/transfer1.py). `make demo` post-trains an edge ControlNet branch on it, frozen.",
        "",
        f"- File: {os.path.basename(weights_path)}, {size:,} bytes ({size / 2**20:.1f} MiB), {args.dtype}, the power-EMA "
        "weights (s = 0.1).",
        f"- Data: {args.clips} synthetic clips of cosmos_transfer/data/demo.py (seeds 0..{args.clips - 1}; "
        "datasets/demo/train are the first 48), 17 frames at 32 x 32, all-MiniLM-L6-v2 caption embeddings (40 x 384). "
        "Validation: the 8 clips of datasets/demo/val (seeds 50,000..50,007).",
        f"- Training: {args.stop_after or args.iters} steps of batch {args.batch}, AdamW lr 1e-3 (AdaLN modulation and "
        f"time embedding at 0.05x), warm-up 100 steps, cosine to 0.1x over {args.iters} steps, weight decay 0.01, gradient clip 1, EDM loss with lognormal "
        f"sigmas (p_mean {noise[0]:g}, p_std {noise[1]:g}, x sqrt(5 latent frames)), seed "
        f"{args.seed}, {args.threads} threads.",
        f"- Command: `.venv/bin/python {command}`; {elapsed / 60:.1f} min on {platform.machine()} "
        f"({os.cpu_count()} cores seen), torch {torch.__version__}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}.",
        "",
        "Validation (EMA weights, 8 clips, fixed noise): EDM-weighted denoising error per noise level (1.0 = the "
        "error of returning the noisy input):",
        "",
        "| sigma | " + " | ".join(f"{s:g}" for s, _ in rows) + " |",
        "| --- | " + " | ".join("---:" for _ in rows) + " |",
        "| error | " + " | ".join(f"{e:.3f}" for _, e in rows) + " |",
        "",
        f"Samples of 4 validation captions (12 res2ab steps, guidance 0, seed 1; base_samples.gif, generated above the "
        f"ground truth): pixel std {stats['generated_std']:.3f} (ground truth {stats['truth_std']:.3f}), mean "
        f"{stats['generated_mean']:.3f} ({stats['truth_mean']:.3f}). Without a control the base puts the caption's "
        "shapes where it likes; the edge branch of `make demo` places them.",
        "",
        "Training log:",
        "",
        "```",
        *log,
        "```",
        "",
    ]
    with open(path, "w", encoding="utf-8") as file:
        file.write("\n".join(lines))


if __name__ == "__main__":
    from cosmos_transfer.cli import run_script

    sys.exit(run_script("pretrain_demo_base", main))
