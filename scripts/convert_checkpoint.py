#!/usr/bin/env python
"""Convert model weights between NVIDIA's official Cosmos files and ours.

    # official base model (e.g. Cosmos-Transfer1-7B base_model.pt) -> our weights file, for checkpoint.load_path
    python scripts/convert_checkpoint.py to-ours base_model.pt base_model.safetensors [--ema] [--dtype bfloat16]

    # our weights (scripts/export_checkpoint.py output) -> an official-layout .pt, for NVIDIA's tools
    python scripts/convert_checkpoint.py to-official demo.safetensors demo_official.pt

Official files are read with torch.load(weights_only=True). Names are the same on both sides (`net.*` and the
uncertainty head `logvar.*`); the conversion unwraps containers, drops Transformer Engine `_extra_state` entries and
reports anything else it leaves out. See cosmos_transfer/checkpoint_convert.py.
"""

from __future__ import annotations

import argparse
import sys

import torch

from cosmos_transfer import checkpoint_convert

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("direction", choices=("to-ours", "to-official"))
    parser.add_argument("source", help="input file (.pt official; .safetensors or .pt ours)")
    parser.add_argument("output", help="output file: .safetensors or .pt")
    parser.add_argument("--ema", action="store_true", help="to-ours: take the file's 'ema' state dict")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), help="cast floating-point weights")
    args = parser.parse_args(argv)

    try:
        if args.direction == "to-ours":
            result = checkpoint_convert.load_official(args.source, use_ema=args.ema)
        else:
            if args.ema:
                parser.error("--ema applies to to-ours only (export EMA weights with scripts/export_checkpoint.py --ema)")
            result = checkpoint_convert.ours_to_official(checkpoint_convert.load_weights_file(args.source))
        checkpoint_convert.save_weights_file(result.state_dict, args.output, _DTYPES.get(args.dtype))
    except (FileNotFoundError, ValueError) as error:
        print(f"convert_checkpoint: {error}", file=sys.stderr)
        return 1
    total = sum(v.numel() for v in result.state_dict.values())
    print(f"wrote {args.output}: {len(result.state_dict)} tensors, {total / 1e6:.1f}M values")
    if result.dropped:
        shown = ", ".join(result.dropped[:6]) + (" ..." if len(result.dropped) > 6 else "")
        print(f"left out {len(result.dropped)} entries that hold no weights of ours: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
