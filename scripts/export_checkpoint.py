#!/usr/bin/env python
"""Export a training checkpoint (DCP folder) to one safetensors file of model weights, for inference and sharing.

    python scripts/export_checkpoint.py outputs/cosmos_transfer/demo/demo_edge_tiny/checkpoints/iter_000000300 \\
        --out demo.safetensors [--ema] [--dtype bfloat16]

A job's `checkpoints/` folder also works (its latest checkpoint is used). `--ema` exports the EMA weights (trainable
parameters from the EMA, cast to the model's dtype; frozen parameters and buffers from the model). The file loads
back through `checkpoint.load_path=demo.safetensors`.
A lean checkpoint (a post-training whose frozen base came from checkpoint.load_path: its `frozen_base.json` names
the file) is exported whole, the base read from that file after checking its size and CRC-32; `--no_base` leaves it
out.

A run with LoRA adapters (config `lora`, cosmos_transfer/lora.py) exports `--lora merged` (the default: the adapters
folded into their layers, W + alpha/rank * B A, under the base names: a plain model file) or `--lora separate` (the
model without its adapters in --out, and the adapters with their rank/alpha/targets in --lora_out, by default
<out>.lora.safetensors; inference folds them in with cosmos_transfer.lora.merge_adapter_file); both paths are printed.
An output may not be the checkpoint's input (inside its folder, or the frozen base a lean checkpoint names), an
existing folder, or the other output: that is refused before anything is read. Files are written under a temporary
name, renamed when complete, with the mode a plain `open` gives. The file's metadata records its `source` checkpoint
and the job's `model.finetune_base` (convert_checkpoint.py to-official writes the base when it was trained).
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
from cosmos_transfer.checkpoints.transfer1 import job_finetune_base  # noqa: E402
from cosmos_transfer.cli import check_outputs, reported_as_user_errors, run_script, writing  # noqa: E402
from cosmos_transfer.dtypes import DTYPE_NAMES, torch_dtype  # noqa: E402
from cosmos_transfer.trainer import frozen_base, safe_dcp  # noqa: E402
from cosmos_transfer.trainer.checkpoint import Checkpointer, read_frozen_base, read_latest_name  # noqa: E402


def resolve_checkpoint(path: str) -> str:
    """The DCP folder `path` names: itself, or the latest one when `path` is a job's checkpoints folder."""
    if not os.path.exists(path):
        raise safe_dcp.CheckpointError(f"checkpoint {path} does not exist")
    if not os.path.isdir(path):
        raise safe_dcp.CheckpointError(
            f"{path} is a file, not a checkpoint folder: a weights file needs no export (it loads as it is through "
            "checkpoint.load_path and inference.py --checkpoint; convert_checkpoint.py converts it)")
    if os.path.isfile(os.path.join(path, ".metadata")):
        return path
    name = read_latest_name(path)  # a name inside `path`, never a path out of it
    if name is not None:
        return os.path.join(path, name)
    raise safe_dcp.CheckpointError(f"{path} is neither a DCP checkpoint (no .metadata) nor a folder with "
                                   "latest_checkpoint.txt: give a job's checkpoints/ folder or one of its iter_* "
                                   "folders")


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
        raise safe_dcp.CheckpointError(f"{path} holds no model weights (no 'model.*' keys): is it one of our training "
                                       "checkpoints?")
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        safe_dcp.load(template, path, no_dist=True)
    weights = {k[len("model.") :]: v for k, v in template.items() if k.startswith("model.")}
    if ema:
        # PowerEMA saves its fp32 shadow of each trainable parameter as "shadow.<parameter name>".
        ema_weights = {k[len("ema.shadow.") :]: v for k, v in template.items() if k.startswith("ema.shadow.")}
        if not ema_weights:
            raise safe_dcp.CheckpointError(f"{path} has no EMA weights ('ema.*' keys): the run trained without an EMA "
                                           "(ema=null); export without --ema")
        matched = {k: v for k, v in ema_weights.items() if k in weights}
        if not matched:
            raise safe_dcp.CheckpointError(
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
    """Write the model weights of checkpoint `path` to `out` (and, `--lora separate`, its adapters to `lora_out`,
    printed); returns the weights written to `out`."""
    from safetensors.torch import save_file

    checkpoint = resolve_checkpoint(path)
    reference = frozen_base.read(checkpoint)
    if lora_mode == "separate":
        lora_out = lora_out or adapter_path(out)
    check_outputs({"--out": out, "--lora_out": lora_out if lora_mode == "separate" else None},
                  {"the checkpoint": checkpoint,
                   f"the frozen base that {frozen_base.FILE} names": reference.path if reference else None})
    weights = read_weights(checkpoint, ema=ema)
    if base:  # a lean checkpoint's frozen base, from the source it references (checked first): a full model
        weights = {**read_frozen_base(checkpoint), **weights}
    if lora.has_adapters(weights):  # merged in float32, before any --dtype cast
        settings = Checkpointer.saved_trainer_state(checkpoint).get("lora")
        if not settings:
            raise safe_dcp.CheckpointError(f"{checkpoint} holds LoRA adapters but its trainer state has no LoRA "
                                           "settings (rank, alpha): it was not written by our trainer")
        if (lora_mode or "merged") == "merged":
            weights = lora.merge_weights(weights, float(settings["alpha"]) / int(settings["rank"]))
        else:
            weights, adapters = lora.split_weights(weights)
            with writing(lora_out) as temporary:
                lora.save_adapters(temporary, adapters, settings)
            print(f"wrote {lora_out}: the LoRA adapters ({len(adapters)} tensors, rank {settings['rank']}, alpha "
                  f"{settings['alpha']}); fold them in with inference.py --lora_checkpoint {lora_out}")
    elif lora_mode is not None:
        raise safe_dcp.CheckpointError(f"--lora {lora_mode}: {checkpoint} holds no LoRA adapters (the run had no "
                                       "`lora` config); leave --lora out")
    if dtype:
        target = torch_dtype(dtype)
        weights = {k: v.to(target) if v.is_floating_point() else v for k, v in weights.items()}
    metadata = {"source": os.path.abspath(path)}
    trained_base, _ = job_finetune_base(checkpoint)
    if trained_base is not None:  # read by convert_checkpoint.py to-official (base_model.pt or not)
        metadata["finetune_base"] = "true" if trained_base else "false"
    with writing(out) as temporary:
        save_file({k: v.contiguous() for k, v in weights.items()}, temporary, metadata=metadata)
    return weights


def main(argv: list[str] | None = None) -> int:
    """Export; the exit status of the error boundary (a user error: one paragraph, 2)."""
    return run_script("export_checkpoint", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
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
    # The ValueErrors of the readers below (latest_checkpoint.txt, the adapters) are about this checkpoint.
    with reported_as_user_errors(ValueError):
        weights = export(args.checkpoint, args.out, ema=args.ema, dtype=args.dtype, lora_mode=args.lora,
                         lora_out=args.lora_out, base=not args.no_base)
    total = sum(v.numel() for v in weights.values())
    print(f"wrote {args.out}: {len(weights)} tensors, {total / 1e6:.2f}M values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
