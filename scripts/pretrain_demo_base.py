#!/usr/bin/env python
"""Pretrain a demo's tiny base once, and write it as NVIDIA ships a base of its family.

    .venv/bin/python scripts/pretrain_demo_base.py --out assets/demo        # ~1 h on a shared 2-core CPU machine
    .venv/bin/python scripts/pretrain_demo_base.py --family 2.5             # ~22 min: assets/demo_2p5
    .venv/bin/python scripts/pretrain_demo_base.py --latent-stats  # print the DCT tokenizer's per-channel statistics
    -> assets/demo/base_model.pt (base_model.net.* + base_model.logvar.*, bfloat16), assets/demo/MODEL_CARD.md,
       assets/demo/base_samples.gif (generated | ground truth for validation captions)
    -> with --family 2.5: assets/demo_2p5/base_ema_bf16.pt (net.*, bfloat16: a Predict2.5 base's layout, read by
       checkpoints/transfer2_5.py), MODEL_CARD.md, base_samples.gif

Family 1 (Transfer1): the net is experiment `demo_base_tiny` (experiments/demo.py: the base of `demo_edge_tiny`, a
text2world GeneralDIT over the DCT tokenizer, EDM). Family 2.5: experiment `demo_base_2p5_tiny`
(experiments/demo_2p5.py: the base of `demo_edge_2p5_tiny`, a Cosmos25DiT trained as Predict2.5 is, video2world on
rectified flow; the model's own training step and loss, as for family 1). Both learn from a larger draw of the demo
generator (`--clips` clips made by cosmos_transfer/data/demo.py, the same code and seeds as datasets/demo/train, which
are its first 48) so that they draw shapes anywhere, not the 48 training clips by heart; validation uses the same 8
clips as datasets/demo/val. `make demo` (and the 2.5 walkthrough of docs/DATASETS.md) post-trains an edge branch
on the shipped file; rerunning this script with the same arguments and seed
reproduces it (same torch version, same thread count: CPU float sums depend on both).

The loop is single-process plain AdamW (the experiment's lr, warm-up and `trainer.lr_multipliers`, then a cosine
decay to 1/10 that settles the weights for the low-noise steps) with the experiment's power EMA, whose weights are
the ones written.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from cosmos_transfer.checkpoints import transfer1, transfer2_5  # noqa: E402
from cosmos_transfer.data.demo import make_demo_dataset  # noqa: E402
from cosmos_transfer.diffusion import edm  # noqa: E402
from cosmos_transfer.ema import PowerEMA  # noqa: E402
from cosmos_transfer.inference import loading  # noqa: E402
from cosmos_transfer.trainer.param_groups import lr_param_groups, scale_group_rates  # noqa: E402
from cosmos_transfer.trainer.trainer import instantiate  # noqa: E402

SIGMAS = (0.05, 0.2, 0.5, 1.0, 3.0, 10.0)  # EDM noise levels of the validation table
FLOW_SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9, 0.97)  # rectified-flow levels (x_t = (1 - sigma) x0 + sigma noise)
ERROR_NAMES = {"1": "weighted error", "2.5": "velocity error"}
SNAPSHOT = "snapshot_base_model.pt"  # the EMA weights so far, while training runs (float32, the family's layout)


@dataclasses.dataclass(frozen=True)
class Family:
    """What differs between the two demo bases: the experiment, where it is shipped, the file and its defaults."""

    experiment: str
    out: str
    weights_file: str
    iters: int


FAMILIES = {
    # Transfer1: NVIDIA's base_model.pt layout (base_model.net.* + base_model.logvar.*), EDM.
    "1": Family("demo_base_tiny", "assets/demo", transfer1.BASE_FILE, 8000),
    # Cosmos-2.5: NVIDIA's *_ema_bf16.pt layout (net.*, a Predict2.5 base), rectified flow.
    "2.5": Family("demo_base_2p5_tiny", "assets/demo_2p5", "base_ema_bf16.pt", 3000),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(FAMILIES), default="1",
                        help="1: the Transfer1 demo base (demo_base_tiny, EDM, assets/demo); 2.5: the Cosmos-2.5 "
                        "demo base (demo_base_2p5_tiny, rectified flow, assets/demo_2p5)")
    parser.add_argument("--out", default=None, help="folder for the weights, MODEL_CARD.md and samples "
                        "(default: the family's assets/ folder)")
    parser.add_argument("--data", default="datasets/demo_pretrain", help="where the pretraining clips are made")
    parser.add_argument("--clips", type=int, default=512, help="training clips drawn from the demo generator")
    parser.add_argument("--iters", type=int, default=None, help="training steps (default: 8000 for 1, 3000 for 2.5)")
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
                        "pretraining clips (experiments/_demo_latents.py holds them as _LATENT_MEAN / _LATENT_STD)")
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
def flow_errors_per_level(model, batch: dict, seed: int = 1) -> list[tuple[float, float]]:
    """(sigma, velocity error) on `batch` with fixed noise, text2world, through the model's own noising, prediction and
    loss (its RectifiedFlowObjective); the error is relative to that of predicting zero velocity (1.0)."""
    model.eval()
    objective = model.objective
    x0 = model.latent_from_batch(model._batch_to_device(dict(batch)))
    condition = model._extend_condition(batch, model.conditioner(batch))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    target = objective.target(x0, noise)
    zero_velocity_error = float((target ** 2).mean())
    rows = []
    for sigma in FLOW_SIGMAS:
        level = torch.full((x0.shape[0],), sigma)
        prediction = model.predict(objective.noisy(x0, noise, level), level, condition, noise)
        rows.append((sigma, float(objective.loss(prediction, target, level).mse) / zero_velocity_error))
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
    family = FAMILIES[args.family]
    args.out = args.out or family.out
    args.iters = args.iters or family.iters
    validation_errors = flow_errors_per_level if args.family == "2.5" else errors_per_sigma
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    if not os.path.isdir(os.path.join(args.data, "train")):
        make_demo_dataset(args.data, num_train=args.clips, num_val=8)
        print(f"made {args.clips} + 8 clips in {args.data} ({time.time() - started:.0f} s)", flush=True)

    overrides = [f"dataloader_train.dataset.root={args.data}/train", f"dataloader_val.dataset.root={args.data}/val",
                 f"trainer.seed={args.seed}", *args.overrides]
    config = loading.compose_config(family.experiment, overrides, make_config=make_config)
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
    print(f"{family.experiment}: {sum(p.numel() for p in params):,} parameters, {len(train_set)} clips, "
          f"{args.iters} steps of batch {args.batch}", flush=True)
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
                rows = validation_errors(model, val_batch)
            line = (f"step {step} ({time.time() - started:.0f} s) train mse {np.mean(losses[-args.every:]):.4f} | "
                    f"val (EMA) {ERROR_NAMES[args.family]} at sigma " + " ".join(f"{s:g}: {e:.3f}" for s, e in rows))
            print(line, flush=True)
            log.append(line)
        if step == args.stop_after:
            break
        if args.snapshot_every and step % args.snapshot_every == 0 and step < args.iters:
            with ema.swapped_in():
                torch.save(_official_base(model, args.family, torch.float32), os.path.join(args.out, SNAPSHOT))

    with ema.swapped_in():
        rows = validation_errors(model, val_batch)
        frames, stats = sample_figures(model, default_collate([val_set[i] for i in range(4)]))
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = os.path.join(args.out, family.weights_file)
    torch.save(_official_base(model, args.family, getattr(torch, args.dtype), state), path)
    snapshot = os.path.join(args.out, SNAPSHOT)
    if os.path.exists(snapshot):
        os.remove(snapshot)
    gif = os.path.join(args.out, "base_samples.gif")
    write_gif(gif, frames)
    elapsed = time.time() - started
    write_card(os.path.join(args.out, "MODEL_CARD.md"), args, family, path, rows, stats, log, elapsed, config)
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB), {gif}, MODEL_CARD.md in {elapsed / 60:.1f} min",
          flush=True)
    return 0


def print_latent_stats(train_set) -> None:
    """The per-channel mean and std of the plain DCT tokenizer's latents over one window of every pretraining clip."""
    from cosmos_transfer.tokenizers.dct import DCTTokenizer, channel_stats

    videos = (train_set[i]["video"][None].float() / 127.5 - 1.0 for i in range(len(train_set)))
    mean, std = channel_stats(DCTTokenizer(), videos)
    print(f"_LATENT_MEAN = {[round(m, 4) for m in mean]}\n_LATENT_STD = {[float(f'{s:.4g}') for s in std]}")


def _official_base(model, family: str, dtype: torch.dtype, state: dict | None = None) -> dict[str, torch.Tensor]:
    """The model's weights in NVIDIA's layout of the family, cast to dtype: Transfer1's base_model.pt
    (base_model.net.*, base_model.logvar.*), or a Predict2.5 base's *_ema_bf16.pt (net.*)."""
    state = state if state is not None else {k: v.detach().clone() for k, v in model.state_dict().items()}
    if family == "2.5":
        net_state = {k[len(transfer2_5.NET):]: v for k, v in state.items() if k.startswith(transfer2_5.NET)}
        (weights,) = transfer2_5.to_official(net_state).values()
    else:
        (weights,) = transfer1.to_official(state).files.values()
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}


def write_card(path: str, args, family: Family, weights_path: str, rows, stats: dict, log: list[str],
               elapsed: float, config) -> None:
    size = os.path.getsize(weights_path)
    command = " ".join(["scripts/pretrain_demo_base.py", *sys.argv[1:]]) if sys.argv[1:] else \
        "scripts/pretrain_demo_base.py"
    if args.family == "2.5":
        title = f"# Demo Cosmos-2.5 base model (`{family.weights_file}`)"
        what = (
            f"A tiny Cosmos25DiT (experiment `{family.experiment}`, experiments/demo_2p5.py: 2 blocks x 192 channels, "
            "3 heads, patch 1, AdaLN-LoRA 64, the MiniLM captions through `crossattn_proj` 384 -> 192, over the DCT "
            "tokenizer's 24 latent channels standardized with the statistics of experiments/_demo_latents.py; no "
            "control branch), trained as Predict2.5 is (video2world, 0/1/2 conditioning latent frames with "
            "probabilities 0.5/0.25/0.25), in NVIDIA's Cosmos-2.5 `*_ema_bf16.pt` layout (`net.*`, a Predict2.5 "
            "base, read by cosmos_transfer/checkpoints/transfer2_5.py). The 2.5 CPU walkthrough of docs/DATASETS.md "
            "post-trains an edge control branch on it, frozen (experiment `demo_edge_2p5_tiny`).")
        objective = config.model["objective"]
        loss = (f"rectified-flow velocity loss (the model's own: shift {float(objective['shift']):g}, "
                f"{objective['time_distribution']} times)")
        table = ("Validation (EMA weights, 8 clips, fixed noise, no conditioning frames): velocity error per noise "
                 "level sigma (x_t = (1 - sigma) x0 + sigma noise), relative to predicting zero velocity (1.0):")
        sampler, branch = "UniPC", "the edge branch of the walkthrough"
    else:
        title = "# Demo base model (`base_model.pt`)"
        what = (
            f"A tiny text2world GeneralDIT (experiment `{family.experiment}`, experiments/demo.py: 2 blocks x 192 "
            "channels, 3 heads, patch 1, over the DCT tokenizer's 24 latent channels, each standardized to unit std "
            "with the per-channel statistics of experiments/_demo_latents.py; no control branch), in NVIDIA's "
            "Cosmos-Transfer1 `base_model.pt` layout (`base_model.net.*` + `base_model.logvar.*`, read by "
            "cosmos_transfer/checkpoints/transfer1.py). `make demo` post-trains an edge ControlNet branch on it, "
            "frozen.")
        loss = (f"EDM loss with lognormal sigmas (p_mean {float(config.model['p_mean']):g}, p_std "
                f"{float(config.model['p_std']):g}, x sqrt(5 latent frames))")
        table = ("Validation (EMA weights, 8 clips, fixed noise): EDM-weighted denoising error per noise level (1.0 = "
                 "the error of returning the noisy input):")
        sampler, branch = "res2ab", "the edge branch of `make demo`"
    lines = [
        title,
        "",
        what,
        "",
        f"- File: {os.path.basename(weights_path)}, {size:,} bytes ({size / 2**20:.1f} MiB), {args.dtype}, the "
        "power-EMA weights (s = 0.1).",
        f"- Data: {args.clips} synthetic clips of cosmos_transfer/data/demo.py (seeds 0..{args.clips - 1}; "
        "datasets/demo/train are the first 48), 17 frames at 32 x 32, all-MiniLM-L6-v2 caption embeddings (40 x 384). "
        "Validation: the 8 clips of datasets/demo/val (seeds 50,000..50,007).",
        f"- Training: {args.stop_after or args.iters} steps of batch {args.batch}, AdamW lr "
        f"{float(config.optimizer['lr']):g} (AdaLN modulation and time embedding at 0.05x), warm-up "
        f"{int(config.scheduler['warm_up_steps'][0])} steps, cosine to 0.1x over {args.iters} steps, weight decay "
        f"{float(config.optimizer['weight_decay']):g}, gradient clip 1, {loss}, seed {args.seed}, {args.threads} "
        "threads.",
        f"- Command: `.venv/bin/python {command}`; {elapsed / 60:.1f} min on {platform.machine()} "
        f"({os.cpu_count()} cores seen), torch {torch.__version__}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}.",
        "",
        table,
        "",
        "| sigma | " + " | ".join(f"{s:g}" for s, _ in rows) + " |",
        "| --- | " + " | ".join("---:" for _ in rows) + " |",
        "| error | " + " | ".join(f"{e:.3f}" for _, e in rows) + " |",
        "",
        f"Samples of 4 validation captions (12 {sampler} steps, guidance 0, seed 1; base_samples.gif, generated above "
        f"the ground truth): pixel std {stats['generated_std']:.3f} (ground truth {stats['truth_std']:.3f}), mean "
        f"{stats['generated_mean']:.3f} ({stats['truth_mean']:.3f}). Without a control the base puts the caption's "
        f"shapes where it likes; {branch} places them.",
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
