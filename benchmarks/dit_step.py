#!/usr/bin/env python
"""Benchmark: one forward+backward of our GeneralDIT against diffusers' CosmosTransformer3DModel, same weights.

    python benchmarks/dit_step.py                     # CPU float32: 8 blocks, 512 ch, 8 heads, latent 16x8x32x32
    python benchmarks/dit_step.py --device cuda       # GPU bfloat16 (autocast-free: weights and inputs in bf16)
    python benchmarks/dit_step.py --device cuda --attention-backend te   # ours on Transformer Engine attention

The two models run alternately in one process (ours, theirs, ours, ...), after one warm-up step each, so that the
noise of a shared machine hits both alike; the ratio is the median over repeats of ours/theirs per pair.
Memory, CPU: peak bytes of live tensors (parameters, gradients, activations, temporaries) during one step, tracked
by torch's MemTracker (a dispatch-mode tracker of tensor storages: exact, unaffected by allocator caching; measured in
a separate, untimed step). GPU: torch.cuda.max_memory_allocated over one step.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cosmos_transfer.checkpoints.diffusers import net_to_diffusers  # noqa: E402
from cosmos_transfer.networks.dit import GeneralDIT  # noqa: E402


class _TorchvisionStandIn:
    """diffusers resizes the padding mask with torchvision (no CPU build on our machines): nearest resize."""

    class InterpolationMode:
        NEAREST = "nearest"

    class functional:
        @staticmethod
        def resize(x, size, interpolation=None):
            return F.interpolate(x, size=list(size), mode="nearest")


def build_models(args, device, dtype):
    from diffusers.models.transformers import transformer_cosmos

    if not getattr(transformer_cosmos, "transforms", None):
        transformer_cosmos.transforms = _TorchvisionStandIn
    torch.manual_seed(0)
    ours = GeneralDIT(
        max_img_h=args.size, max_img_w=args.size, max_frames=args.frames, in_channels=16, out_channels=16,
        model_channels=args.channels, num_blocks=args.blocks, num_heads=args.heads, crossattn_emb_channels=1024,
        rope_t_extrapolation_ratio=2.0, attention_backend=args.attention_backend,
    )
    with torch.no_grad():  # non-zero AdaLN outputs, as in a trained network
        for p in ours.parameters():
            p.normal_(0, 0.02)
    theirs = transformer_cosmos.CosmosTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=args.heads, attention_head_dim=args.channels // args.heads,
        num_layers=args.blocks, text_embed_dim=1024, adaln_lora_dim=256, max_size=(args.frames, args.size, args.size),
        patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0), concat_padding_mask=True, extra_pos_embed_type="learnable",
    )
    theirs.load_state_dict(net_to_diffusers(ours.state_dict()), strict=True)
    return ours.to(device, dtype).train(), theirs.to(device, dtype).train()


def make_inputs(args, device, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, args.frames, args.size, args.size, generator=g).to(device, dtype)
    t = torch.rand(1, generator=g).to(device, dtype)
    text = torch.randn(1, args.text_len, 1024, generator=g).to(device, dtype)
    padding = torch.zeros(1, 1, args.size * 8, args.size * 8, device=device, dtype=dtype)
    return x, t, text, padding


def step_fn(name, model, inputs, fps):
    x, t, text, padding = inputs

    def step():
        model.zero_grad(set_to_none=True)
        if name == "ours":
            out = model(x, t, text, fps=torch.tensor([fps], device=x.device), padding_mask=padding)
        else:
            out = model(x, t, text, fps=fps, padding_mask=padding).sample
        out.float().square().mean().backward()

    return step


def timed(step, device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one step."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu


def peak_memory(step, model, device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        step()
    return tracker.get_tracker_snapshot("peak")[device]["Total"]


def measure(steps: dict, models: dict, device, repeats: int, memory: bool = True) -> dict:
    """Alternate the steps (after one warm-up each) `repeats` times; wall and CPU seconds per step, per-pair ratios
    of the first over the second, and the peak memory of one more step of each (unless memory=False)."""
    for step in steps.values():  # warm-up
        step()
    times = {name: [] for name in steps}
    cpu_times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            wall, cpu = timed(step, device)
            times[name].append(wall)
            cpu_times[name].append(cpu)
    first, second = list(steps)
    return dict(
        times=times, cpu_times=cpu_times,
        ratios=[a / b for a, b in zip(times[first], times[second])],
        cpu_ratios=[a / b for a, b in zip(cpu_times[first], cpu_times[second])],
        memory={name: peak_memory(steps[name], models[name], device) for name in steps} if memory else {},
    )


def print_table(title: str, result: dict) -> None:
    """The Markdown table of `measure`'s result (BENCHMARKS.md), under a title line."""
    times, cpu_times, memory = result["times"], result["cpu_times"], result["memory"]
    first, second = list(times)
    print(title + "\n")
    print("| model | median wall step (s) | all wall steps (s) | median process CPU (s) | peak memory (MiB) |")
    print("| --- | --- | --- | --- | --- |")
    for name in times:
        mem = f"{memory[name] / 2**20:.0f}" if memory else "-"
        print(f"| {name} | {statistics.median(times[name]):.3f} | {', '.join(f'{s:.2f}' for s in times[name])} | "
              f"{statistics.median(cpu_times[name]):.2f} | {mem} |")
    mem_ratio = f"{memory[first] / memory[second]:.2f}" if memory else "-"
    print(f"| {first} / {second} (median of per-pair ratios) | {statistics.median(result['ratios']):.2f} | "
          f"{', '.join(f'{r:.2f}' for r in result['ratios'])} | {statistics.median(result['cpu_ratios']):.2f} | "
          f"{mem_ratio} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8, help="latent frames")
    parser.add_argument("--size", type=int, default=32, help="latent height = width")
    parser.add_argument("--text-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu (float32) or cuda (bfloat16)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--attention-backend", choices=("torch", "te"), default="torch",
                        help="our network's attention: PyTorch SDPA or Transformer Engine (CUDA); diffusers' is SDPA")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    models = dict(zip(("ours", "diffusers"), build_models(args, device, dtype)))
    inputs = make_inputs(args, device, dtype)
    steps = {name: step_fn(name, model, inputs, 24.0) for name, model in models.items()}
    result = measure(steps, models, device, args.repeats, memory=not args.no_memory)
    print_table(f"GeneralDIT ({args.attention_backend} attention) fwd+bwd, {args.blocks} blocks x {args.channels} ch x {args.heads} heads, latent "
                f"16x{args.frames}x{args.size}x{args.size}, batch 1, text {args.text_len}x1024, {dtype} on {device}, "
                f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} alternating repeats, "
                f"{datetime.date.today()}", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
