#!/usr/bin/env python
"""Export a training checkpoint (DCP folder) to one safetensors file of model weights, for inference and sharing.

    python scripts/export_checkpoint.py outputs/cosmos_transfer/demo/demo_edge_tiny/checkpoints/iter_000000300 \\
        --out demo.safetensors [--ema] [--dtype bfloat16]

A job's `checkpoints/` folder also works (its latest checkpoint is used). `--ema` exports the EMA weights (trainable
parameters from the EMA, cast to the model's dtype; frozen parameters and buffers from the model). The file loads back through `checkpoint.load_path=demo.safetensors`.
A lean checkpoint (a post-training whose frozen base came from checkpoint.load_path: its `frozen_base.json` names
the file) is exported whole, the base read from that file after checking its size and CRC-32; `--no_base` leaves it
out.

A run with LoRA adapters (config `lora`, cosmos_transfer/lora.py) exports `--lora merged` (the default: the adapters
folded into their layers, W + alpha/rank * B A, under the base names: a plain model file) or `--lora separate` (the
model without its adapters in --out, and the adapters with their rank/alpha/targets in --lora_out, by default
<out>.lora.safetensors; inference folds them in with cosmos_transfer.lora.merge_adapter_file).
Runs in one process, without torchrun; DCP reassembles the shards whatever the world size that wrote them.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import torch
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cosmos_transfer import lora  # noqa: E402
from cosmos_transfer.dtypes import DTYPE_NAMES, torch_dtype  # noqa: E402
from cosmos_transfer.trainer import safe_dcp  # noqa: E402
from cosmos_transfer.trainer.checkpoint import Checkpointer, read_frozen_base, read_latest_name  # noqa: E402

def resolve_checkpoint(path: str) -> str:
    """The DCP folder `path` names: itself, or the latest one when `path` is a job's checkpoints folder."""
    if os.path.isfile(os.path.join(path, ".metadata")):
        return path
    name = read_latest_name(path)  # a name inside `path`, never a path out of it
    if name is not None:
        return os.path.join(path, name)
    raise FileNotFoundError(f"{path} is neither a DCP checkpoint (no .metadata) nor a folder with latest_checkpoint.txt")


def read_weights(path: str, ema: bool = False) -> dict[str, torch.Tensor]:
    """Full (unsharded) model weights from a DCP checkpoint folder, keyed by parameter name (its files checked
    against its manifest first; nothing in them can run code)."""
    safe_dcp.verify_checkpoint(path)
    metadata = safe_dcp.read_metadata(path).state_dict_metadata
    template = {
        key: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in metadata.items()
        if isinstance(meta, TensorStorageMetadata) and (key.startswith("model.") or key.startswith("ema."))
    }
    if not any(k.startswith("model.") for k in template):
        raise ValueError(f"{path} holds no model weights (no 'model.*' keys): is it one of our training checkpoints?")
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        safe_dcp.load(template, path, no_dist=True)
    weights = {k[len("model.") :]: v for k, v in template.items() if k.startswith("model.")}
    if ema:
        # PowerEMA saves its fp32 shadow of each trainable parameter as "shadow.<parameter name>".
        ema_weights = {k[len("ema.shadow.") :]: v for k, v in template.items() if k.startswith("ema.shadow.")}
        if not ema_weights:
            raise ValueError(f"{path} has no EMA weights ('ema.*' keys): the run trained without an EMA (ema=null)")
        matched = {k: v for k, v in ema_weights.items() if k in weights}
        if not matched:
            raise ValueError(
                f"{path}: the EMA's keys ({sorted(ema_weights)[:3]}...) do not name model parameters "
                f"({sorted(weights)[:3]}...)"
            )
        weights.update({k: v.to(weights[k].dtype) for k, v in matched.items()})
    return weights


def adapter_path(out: str) -> str:
    """Where `--lora separate` writes the adapters by default: beside `out`, as <stem>.lora.safetensors."""
    return out[: -len(".safetensors")] + ".lora.safetensors"


def export(path: str, out: str, ema: bool = False, dtype: str | None = None, lora_mode: str | None = None,
           lora_out: str | None = None, base: bool = True) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    checkpoint = resolve_checkpoint(path)
    weights = read_weights(checkpoint, ema=ema)
    if base:  # a lean checkpoint's frozen base, from the source it references (checked first): a full model
        weights = {**read_frozen_base(checkpoint), **weights}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if lora.has_adapters(weights):  # merged in float32, before any --dtype cast
        settings = Checkpointer.saved_trainer_state(checkpoint).get("lora")
        if not settings:
            raise ValueError(f"{checkpoint} holds LoRA adapters but its trainer state has no LoRA settings (rank, "
                             "alpha): it was not written by our trainer")
        if (lora_mode or "merged") == "merged":
            weights = lora.merge_weights(weights, float(settings["alpha"]) / int(settings["rank"]))
        else:
            weights, adapters = lora.split_weights(weights)
            lora.save_adapters(lora_out or adapter_path(out), adapters, settings)
    elif lora_mode is not None:
        raise ValueError(f"--lora {lora_mode}: {checkpoint} holds no LoRA adapters (the run had no `lora` config)")
    if dtype:
        target = torch_dtype(dtype)
        weights = {k: v.to(target) if v.is_floating_point() else v for k, v in weights.items()}
    save_file({k: v.contiguous() for k, v in weights.items()}, out, metadata={"source": os.path.abspath(path)})
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder (iter_*) or a job's checkpoints/ folder")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights instead of the regular ones")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="cast floating-point weights (default: as saved)")
    parser.add_argument("--lora", choices=("merged", "separate"),
                        help="a LoRA run: fold the adapters in (merged, the default) or write them apart (separate)")
    parser.add_argument("--lora_out", help="--lora separate: the adapter file (default: <out>.lora.safetensors)")
    parser.add_argument("--no_base", action="store_true",
                        help="a lean checkpoint (frozen_base.json): leave out the frozen base it references (by "
                             "default it is read from its source, so that the file is the whole model)")
    args = parser.parse_args(argv)
    for name in ("out", "lora_out"):
        value = getattr(args, name)
        if value is not None and not value.endswith(".safetensors"):
            parser.error(f"--{name} must end in .safetensors, got {value}")
    if args.lora_out and args.lora != "separate":
        parser.error("--lora_out goes with --lora separate")
    try:
        weights = export(args.checkpoint, args.out, ema=args.ema, dtype=args.dtype, lora_mode=args.lora,
                         lora_out=args.lora_out, base=not args.no_base)
    except (FileNotFoundError, ValueError) as error:
        print(f"export_checkpoint: {error}", file=sys.stderr)
        return 2
    total = sum(v.numel() for v in weights.values())
    print(f"wrote {args.out}: {len(weights)} tensors, {total / 1e6:.2f}M values")
    return 0


if __name__ == "__main__":
    from cosmos_transfer.cli import run_script

    sys.exit(run_script("export_checkpoint", main))
