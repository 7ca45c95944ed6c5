#!/usr/bin/env python
"""Export a training checkpoint (DCP folder) to one safetensors file of model weights, for inference and sharing.

    python scripts/export_checkpoint.py outputs/cosmos_transfer/demo/demo_edge_tiny/checkpoints/iter_000000300 \\
        --out demo.safetensors [--ema] [--dtype bfloat16]

A job's `checkpoints/` folder also works (its latest checkpoint is used). `--ema` exports the EMA weights (trainable
parameters from the EMA, cast to the model's dtype; frozen parameters and buffers from the model). The file loads back through `checkpoint.load_path=demo.safetensors`.
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

from cosmos_transfer.dtypes import DTYPE_NAMES, torch_dtype  # noqa: E402
from cosmos_transfer.trainer import safe_dcp  # noqa: E402
from cosmos_transfer.trainer.checkpoint import read_latest_name  # noqa: E402

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
            raise ValueError(f"{path} has no EMA weights ('ema.*' keys): the run had no model.ema configured")
        matched = {k: v for k, v in ema_weights.items() if k in weights}
        if not matched:
            raise ValueError(
                f"{path}: the EMA's keys ({sorted(ema_weights)[:3]}...) do not name model parameters "
                f"({sorted(weights)[:3]}...)"
            )
        weights.update({k: v.to(weights[k].dtype) for k, v in matched.items()})
    return weights


def export(path: str, out: str, ema: bool = False, dtype: str | None = None) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    weights = read_weights(resolve_checkpoint(path), ema=ema)
    if dtype:
        target = torch_dtype(dtype)
        weights = {k: v.to(target) if v.is_floating_point() else v for k, v in weights.items()}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, out, metadata={"source": os.path.abspath(path)})
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder (iter_*) or a job's checkpoints/ folder")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights instead of the regular ones")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="cast floating-point weights (default: as saved)")
    args = parser.parse_args(argv)
    if not args.out.endswith(".safetensors"):
        parser.error(f"--out must end in .safetensors, got {args.out}")
    try:
        weights = export(args.checkpoint, args.out, ema=args.ema, dtype=args.dtype)
    except (FileNotFoundError, ValueError) as error:
        print(f"export_checkpoint: {error}", file=sys.stderr)
        return 2
    total = sum(v.numel() for v in weights.values())
    print(f"wrote {args.out}: {len(weights)} tensors, {total / 1e6:.2f}M values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
