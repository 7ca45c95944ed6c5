#!/usr/bin/env python
"""Convert model weights between NVIDIA's official Cosmos files and ours.

    # official base model (e.g. Cosmos-Transfer1-7B base_model.pt) -> our weights file, for checkpoint.load_path
    python scripts/convert_checkpoint.py to-ours base_model.pt base_model.safetensors [--ema] [--dtype bfloat16]

    # our weights (scripts/export_checkpoint.py output) -> an official-layout .pt, for NVIDIA's tools
    python scripts/convert_checkpoint.py to-official demo.safetensors demo_official.pt

    # ControlNet (Cosmos-Transfer1): base + official control files, or new branches copied from the base
    python scripts/convert_checkpoint.py to-ours base_model.pt ctrl.safetensors --control edge=edge_control.pt
    python scripts/convert_checkpoint.py to-ours base_model.pt ctrl.safetensors --new-control edge --num-control-blocks 3
    # one branch of our control model -> an official control file
    python scripts/convert_checkpoint.py to-official ctrl.safetensors edge_control.pt --control-key edge

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
    # ControlNet branches (key handling in cosmos_transfer/networks/dit_ctrl.py).
    parser.add_argument("--control", action="append", default=[], metavar="KEY=PATH",
                        help="to-ours: add the official control file PATH as branch KEY (repeatable)")
    parser.add_argument("--new-control", action="append", default=[], metavar="KEY",
                        help="to-ours: add a new branch KEY initialized from the base (repeatable)")
    parser.add_argument("--num-control-blocks", type=int, default=3, help="blocks of a --new-control branch")
    parser.add_argument("--control-key", help="to-official: write branch KEY as an official control file")
    args = parser.parse_args(argv)
    controls = {}
    for item in args.control:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            parser.error(f"--control expects KEY=PATH (e.g. edge=edge_control.pt), got {item!r}")
        controls[key] = path

    try:
        if args.direction == "to-ours":
            result = checkpoint_convert.load_official(args.source, use_ema=args.ema)
            if controls or args.new_control:
                from cosmos_transfer.networks import dit_ctrl

                weights, dropped = dit_ctrl.add_control_branches(
                    result.state_dict, controls, args.new_control, args.num_control_blocks, use_ema=args.ema)
                result = checkpoint_convert.Conversion(weights, sorted(result.dropped + dropped))
        elif args.control_key:
            from cosmos_transfer.networks import dit_ctrl

            weights = checkpoint_convert.load_weights_file(args.source)
            result = checkpoint_convert.Conversion(dit_ctrl.ours_to_official_control(weights, args.control_key))
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
