#!/usr/bin/env python
"""Lean checkpoints (trainer/frozen_base.py): bytes on disk against the trainable state's bytes, and save time,
next to a full checkpoint of the same run (the frozen base saved too, as before).

    python benchmarks/lean_checkpoint.py                 # a GeneralDIT at width 2048, 12 blocks, 3-block branch

The model is a ControlDiffusionModel (pixel tokenizer) whose frozen base is stored in bf16 and read from a
`.safetensors` file (checkpoint.load_path), one branch trainable in fp32, AdamW state after one step, PowerEMA: what
a control post-training checkpoints. One process (gloo, world size 1), the trainer's Checkpointer and app state.
"trainable state" = the trainable parameters + their AdamW moments + the EMA shadow (every byte a resume needs and
nothing else can give); the lean checkpoint's extra bytes are DCP metadata, buffers, trainer state JSON, manifest
and frozen_base.json. The first lean save also takes the CRC-32 of the base file (once per run); it is timed apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GIB = 1 << 30


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--control-blocks", type=int, default=3)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()

    import torch
    import torch.distributed as dist

    from cosmos_transfer.checkpoints import files
    from cosmos_transfer.diffusion.model_ctrl import ControlDiffusionModel
    from cosmos_transfer.ema import PowerEMA
    from cosmos_transfer.networks.dit import GeneralDIT
    from cosmos_transfer.networks.dit_ctrl import GeneralDITControl
    from cosmos_transfer.tokenizers.pixel import PixelTokenizer
    from cosmos_transfer.trainer import frozen_base
    from cosmos_transfer.trainer.checkpoint import Checkpointer, ModelState, OptimizerState, StatefulAdapter
    from cosmos_transfer.trainer.parallelize import parallelize

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    work = tempfile.mkdtemp(dir=args.dir, prefix="lean_ckpt_")
    net = dict(max_img_h=64, max_img_w=64, max_frames=8, in_channels=48, out_channels=48, patch_spatial=2,
               patch_temporal=1, model_channels=args.channels, num_blocks=args.blocks, num_heads=16,
               crossattn_emb_channels=1024, use_adaln_lora=True, adaln_lora_dim=256)
    torch.manual_seed(0)
    model = ControlDiffusionModel(GeneralDIT(**net), PixelTokenizer(),
                                  net_ctrl=GeneralDITControl(num_control_blocks=args.control_blocks, hint_channels=48,
                                                             **net),
                                  hint_keys=["edge"], base_dtype="bfloat16")
    frozen_keys = sorted(n for n, p in model.named_parameters() if not p.requires_grad and n.startswith("net."))
    source = os.path.join(work, "base.safetensors")
    files.save_weights_file({k: v for k, v in model.state_dict().items() if k.startswith("net.")}, source)
    parallelize(model, device=torch.device("cpu"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    for p in trainable:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()
    ema = PowerEMA(model)
    ema.update()

    def local_bytes(tensors) -> int:
        return sum((t.to_local() if hasattr(t, "to_local") else t).nbytes for t in tensors)

    trainable_bytes = local_bytes(trainable)
    moments = local_bytes(t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.ndim)
    ema_bytes = sum(t.nbytes for t in ema.shadow.values())
    state_bytes = trainable_bytes + moments + ema_bytes
    frozen_bytes = local_bytes(p for p in model.parameters() if not p.requires_grad)

    rank_state = {"iteration": 1}
    results = {}
    for kind in ("full", "lean_first", "lean"):
        checkpointer = Checkpointer(os.path.join(work, kind), keep_last_k=1, say=lambda _: None)
        leave_out = frozen_keys if kind != "full" else ()
        reference = None
        started = time.perf_counter()
        if kind != "full":  # the trainer's _frozen_reference: size and CRC-32 at the first save, then kept
            reference = frozen_base.describe(source, frozen_keys, True, [], False) if kind == "lean_first" else \
                results["lean_first"]["reference"]
        app_state = {"model": ModelState(model, leave_out), "optimizer": OptimizerState(model, optimizer),
                     "ema": StatefulAdapter(ema)}
        checkpointer.save(1, app_state, rank_state, frozen=reference)
        elapsed = time.perf_counter() - started
        results[kind] = {"bytes": folder_bytes(os.path.join(work, kind, "iter_000000001")), "s": elapsed,
                         "reference": reference}
    print(f"model: GeneralDIT width {args.channels}, {args.blocks} blocks (bf16, frozen: {frozen_bytes / GIB:.2f} "
          f"GiB) + a {args.control_blocks}-block branch (fp32, trainable: {trainable_bytes / GIB:.3f} GiB)")
    print(f"trainable state (weights {trainable_bytes / GIB:.3f} + AdamW {moments / GIB:.3f} + EMA "
          f"{ema_bytes / GIB:.3f}): {state_bytes / GIB:.3f} GiB")
    for kind, r in results.items():
        print(f"{kind:>10}: {r['bytes'] / GIB:.3f} GiB = {r['bytes'] / state_bytes:.3f} x trainable state; "
              f"save {r['s']:.2f} s")
    shutil.rmtree(work, ignore_errors=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
