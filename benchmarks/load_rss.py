#!/usr/bin/env python
"""Peak host memory (RSS) per rank while a model is built on the meta device, sharded with FSDP2, materialized and
loaded from a weights file, each rank reading only its rows (cosmos_transfer/trainer/shard_loading.py).

    python benchmarks/load_rss.py --blocks 5 --format safetensors     # writes the file, then torchrun 2 ranks

The model is a frozen bf16 GeneralDIT at the 7B width (model_channels 4096, 32 heads, 28 blocks in the real one)
with `--blocks` blocks (5: ~1.2 B parameters), as the base of a post-training holds it (ControlDiffusionModel
base_dtype=bfloat16). The file is written first in bf16 from random values, by one process, in the layout asked:
`safetensors` (ours: net.*) or `pt` (NVIDIA's base_model.pt: base_model.net.*, torch.save). Each rank then reports its
peak RSS (getrusage ru_maxrss, the whole process: Python and torch included) against its shard's bytes and the
target 1.25 x shard + 2 GiB. `--eager` measures instead the former path (the whole model built in fp32 on every
rank, then sharded and loaded): only for a small --blocks on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GIB = 1 << 30


def net_kwargs(blocks: int, channels: int = 4096, heads: int = 32) -> dict:
    """GeneralDIT arguments of Cosmos-Transfer1-7B's base (configs/net.py), with `blocks` blocks."""
    return dict(max_img_h=240, max_img_w=240, max_frames=128, in_channels=16, out_channels=16, patch_spatial=2,
                patch_temporal=1, model_channels=channels, num_blocks=blocks, num_heads=heads,
                crossattn_emb_channels=1024, use_adaln_lora=True, adaln_lora_dim=256,
                extra_per_block_abs_pos_emb=False, affline_emb_norm=True)


def base_holder(**kwargs):
    """A module holding a frozen bf16 GeneralDIT as `net` (the keys of a model's base, net.*)."""
    import torch
    from torch import nn

    from cosmos_transfer.networks.dit import GeneralDIT

    class Base(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = GeneralDIT(**kwargs).requires_grad_(False).to(torch.bfloat16)

    return Base()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def write_file(path: str, blocks: int, layout: str) -> int:
    """A bf16 weights file of the model with random values, one tensor made at a time; returns its bytes."""
    import torch

    from cosmos_transfer.checkpoints import files
    from cosmos_transfer.trainer.shard_loading import build_on_meta
    from cosmos_transfer.config.lazy import LazyCall as L

    model = build_on_meta(L(base_holder)(**net_kwargs(blocks)))
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, tensor in model.state_dict().items():
        value = torch.randn(tensor.shape, generator=generator, dtype=torch.float32).to(tensor.dtype) * 0.02 \
            if tensor.is_floating_point() else torch.zeros(tensor.shape, dtype=tensor.dtype)
        state[("base_model." + name) if layout == "pt" else name] = value
    files.save_weights_file(state, path)
    return os.path.getsize(path)


def measure_rank(path: str, blocks: int, eager: bool) -> dict:
    """On each rank under torchrun: build, shard, materialize, load; the peak RSS and the shard's bytes."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from cosmos_transfer.config.lazy import LazyCall as L, instantiate
    from cosmos_transfer.trainer.checkpoint import load_model_weights
    from cosmos_transfer.trainer.parallelize import parallelize
    from cosmos_transfer.trainer.shard_loading import build_on_meta, materialize

    dist.init_process_group("gloo")
    device = torch.device("cpu")
    config = L(base_holder)(**net_kwargs(blocks))
    start = time.perf_counter()
    if eager:  # the former path: every rank builds the whole model in fp32, then shards it
        torch.manual_seed(0)
        with torch.no_grad():
            model = instantiate(config)
        parallelize(model, device=device)
    else:
        model = build_on_meta(config)
        parallelize(model, device=device)
        materialize(model, device, seed=0)
    built = time.perf_counter()
    after_build = peak_rss_bytes()
    load_model_weights(model, path)
    loaded = time.perf_counter()
    shard = sum((t.to_local() if isinstance(t, DTensor) else t).nbytes for t in model.state_dict().values())
    result = {"rank": dist.get_rank(), "world": dist.get_world_size(), "peak_rss_bytes": peak_rss_bytes(),
              "peak_rss_after_build_bytes": after_build, "shard_bytes": shard, "build_s": built - start,
              "load_s": loaded - built}
    dist.destroy_process_group()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--format", choices=("safetensors", "pt"), default="safetensors")
    parser.add_argument("--workdir", default="/tmp/cosmos_load_rss")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--eager", action="store_true", help="measure the former path (whole model on every rank)")
    parser.add_argument("--rank-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = os.path.join(args.workdir, f"base_{args.blocks}blocks" + (".safetensors" if args.format == "safetensors"
                                                                       else "_model.pt"))
    if args.rank_worker:
        result = measure_rank(path, args.blocks, args.eager)
        with open(os.path.join(args.workdir, f"rank{result['rank']}.json"), "w", encoding="utf-8") as f:
            json.dump(result, f)
        return
    os.makedirs(args.workdir, exist_ok=True)
    if not os.path.isfile(path):
        started = time.perf_counter()
        size = write_file(path, args.blocks, args.format)
        print(f"wrote {path}: {size / GIB:.2f} GiB in {time.perf_counter() - started:.0f} s", flush=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ranks}",
               os.path.abspath(__file__), "--rank-worker", f"--blocks={args.blocks}", f"--format={args.format}",
               f"--workdir={args.workdir}"] + (["--eager"] if args.eager else [])
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    file_bytes = os.path.getsize(path)
    print(f"file {os.path.basename(path)} {file_bytes / GIB:.2f} GiB, {args.ranks} ranks, "
          f"{'eager (former path)' if args.eager else 'meta build + per-shard load'}")
    for rank in range(args.ranks):
        with open(os.path.join(args.workdir, f"rank{rank}.json"), encoding="utf-8") as f:
            r = json.load(f)
        target = 1.25 * r["shard_bytes"] + 2 * GIB
        print(f"rank {rank}: peak RSS {r['peak_rss_bytes'] / GIB:.2f} GiB (after build "
              f"{r['peak_rss_after_build_bytes'] / GIB:.2f}), shard {r['shard_bytes'] / GIB:.2f} GiB, target "
              f"{target / GIB:.2f} GiB -> {'within' if r['peak_rss_bytes'] <= target else 'OVER'}; "
              f"build {r['build_s']:.1f} s, load {r['load_s']:.1f} s")


if __name__ == "__main__":
    main()
