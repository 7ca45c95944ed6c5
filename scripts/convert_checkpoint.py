#!/usr/bin/env python
"""Convert model weights between NVIDIA's official Cosmos-Transfer1 / Cosmos-1.0 files and ours.

    # official base model (Cosmos-Transfer1-7B base_model.pt, or any layout NVIDIA ships) -> our weights file
    python scripts/convert_checkpoint.py to-ours base_model.pt base_model.safetensors [--ema] [--dtype bfloat16]

    # ControlNet: base + official control files, or new branches copied from the base
    python scripts/convert_checkpoint.py to-ours base_model.pt ctrl.safetensors --control edge=edge_control.pt
    python scripts/convert_checkpoint.py to-ours base_model.pt ctrl.safetensors --new-control edge \\
        --num-control-blocks 3
    # a file holding base and branch (NVIDIA's combine_base_ctrl_ckpt.py output): name the branch's hint key
    python scripts/convert_checkpoint.py to-ours checkpoints_teacher/edge_control.pt ctrl.safetensors --control-key edge

    # ours -> NVIDIA's layouts: every branch as <key>_control.pt in a folder, and base_model.pt when the base was
    # trained (model.finetune_base=True: read from the export's job, or say so with --finetune-base; a frozen base is
    # NVIDIA's base_model.pt unchanged and is left out)
    python scripts/convert_checkpoint.py to-official ctrl.safetensors official/ [--finetune-base]
    python scripts/convert_checkpoint.py to-official ctrl.safetensors edge_control.pt --control-key edge   # one branch
    python scripts/convert_checkpoint.py to-official base.safetensors base_model.pt                       # no branches

    # Cosmos-2.5 (Transfer2.5 / Predict2.5 *_ema_bf16.pt, recognized by their names): a released file is already in
    # our layout (net.* = the network) and loads as it is; combine one released file per modality for a joint
    # model, branch b = the b-th --control in the model's hint-key order (experiments/transfer2_5.py)
    python scripts/convert_checkpoint.py to-ours general/edge/<uuid>_ema_bf16.pt joint.safetensors \
        --control edge=general/edge/<uuid>_ema_bf16.pt --control vis=general/blur/<uuid>_ema_bf16.pt
    python scripts/convert_checkpoint.py to-official joint.safetensors official/    # branch_<b>.pt, released layout

Every file read is named with the layout found (cosmos_transfer/checkpoints/transfer1.py lists them) and what was left
out (Transformer Engine `_extra_state`, optimizer state, ...). Files are read with torch.load(weights_only=True).
An output may not be one of the inputs (nor a hard link to one) or an existing folder: that is refused before
anything is read. Each file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from cosmos_transfer.checkpoints import files, transfer1, transfer2_5
from cosmos_transfer.cli import OutputPathError, check_outputs, run_script, writing
from cosmos_transfer.dtypes import DTYPE_NAMES, torch_dtype

DEFAULT_CONTROL_BLOCKS = 3


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("direction", choices=("to-ours", "to-official"))
    parser.add_argument("source", help="input file (.pt or .safetensors)")
    parser.add_argument("output", help="to-ours: .safetensors or .pt; to-official: a .pt file or a folder")
    parser.add_argument("--ema", action="store_true", help="to-ours: take the files' EMA weights ('ema')")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="cast floating-point weights")
    parser.add_argument("--control", action="append", default=[], metavar="KEY=PATH",
                        help="to-ours: add the official control file PATH as branch KEY (repeatable)")
    parser.add_argument("--new-control", action="append", default=[], metavar="KEY",
                        help="to-ours: add a new branch KEY initialized from the base (repeatable)")
    parser.add_argument("--num-control-blocks", type=int,
                        help=f"blocks of a --new-control branch (default {DEFAULT_CONTROL_BLOCKS}; at most the base's)")
    parser.add_argument("--control-key", help="to-ours: the hint key of a branch inside SOURCE (base+control files); "
                                              "to-official: write only branch KEY")
    parser.add_argument("--finetune-base", action="store_true",
                        help="to-official: the base was trained too: also write base_model.pt (found by itself "
                             "for an export of a job with model.finetune_base=True)")
    args = parser.parse_args(argv)
    args.controls = {}
    for item in args.control:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            parser.error(f"--control expects KEY=PATH (e.g. edge=edge_control.pt), got {item!r}")
        if key in args.controls:  # the second would replace the first without a word
            parser.error(f"--control {key}= is given twice ({args.controls[key]} and {path}): one file per branch")
        args.controls[key] = path
    if args.direction == "to-official" and (args.controls or args.new_control or args.ema):
        parser.error("--control, --new-control and --ema apply to to-ours only (export EMA weights with "
                     "scripts/export_checkpoint.py --ema)")
    if args.num_control_blocks is not None and not args.new_control:
        parser.error("--num-control-blocks sets the blocks of a --new-control branch; there is none to apply it to")
    if args.direction == "to-ours" and not args.output.endswith((".safetensors", ".pt")):
        parser.error(f"to-ours writes a .safetensors (ours) or .pt file; OUTPUT {args.output!r} ends in neither")
    if args.direction == "to-official" and args.output.endswith(".safetensors"):
        parser.error(f"to-official writes NVIDIA's .pt files: OUTPUT {args.output!r} must be a .pt file or a folder")
    return args


def _inputs(args: argparse.Namespace) -> dict[str, str]:
    """The files the command reads, by how the user named them, each checked to be a file."""
    inputs = {"SOURCE": args.source, **{f"--control {key}": path for key, path in args.controls.items()}}
    for label, path in inputs.items():
        if not os.path.exists(path):
            raise files.WeightsFileError(f"{label} {path} does not exist")
        if os.path.isdir(path):
            is_checkpoint = os.path.isfile(os.path.join(path, ".metadata"))
            hint = (" A training checkpoint (iter_* folder) is exported to one file first: "
                    f"scripts/export_checkpoint.py {path} --out model.safetensors" if is_checkpoint else "")
            raise files.WeightsFileError(f"{label} {path} is a folder, not a weights file (.pt or .safetensors).{hint}")
    return inputs


def _write(state: dict[str, torch.Tensor], path: str, dtype: str | None, inputs: dict[str, str]) -> None:
    check_outputs({"the output file": path}, inputs)  # a folder output's file names are known only now
    with writing(path) as temporary:
        files.save_weights_file(state, temporary, torch_dtype(dtype) if dtype else None)
    total = sum(v.numel() for v in state.values())
    print(f"wrote {path}: {len(state)} tensors, {total / 1e6:.1f}M values")


def _left_out(entries: list[str], why: str) -> None:
    if entries:
        shown = ", ".join(entries[:6]) + (" ..." if len(entries) > 6 else "")
        print(f"left out {len(entries)} entries ({why}): {shown}")


def to_ours_2p5(args: argparse.Namespace, inputs: dict[str, str]) -> None:
    """A Cosmos-2.5 file (and one released file per branch) -> our weights file (net.*, NVIDIA's names)."""
    options = {"--new-control": args.new_control, "--num-control-blocks": args.num_control_blocks is not None,
               "--control-key": args.control_key, "--ema": args.ema}
    given = [name for name, value in options.items() if value]
    if given:
        raise files.WeightsFileError(
            f"{args.source} is a Cosmos-2.5 file, and {', '.join(given)} are options for Cosmos-Transfer1 files "
            "only: a released 2.5 file is EMA weights already and its branch keeps its blocks, "
            "and checkpoint.load_path starts a model's branches from a base-only (Predict2.5) file by itself. Leave "
            "them out")
    base = transfer2_5.read_weights(args.source)
    print(f"read {base.describe()}")
    if not args.controls:
        _write(base.model_state(), args.output, args.dtype, inputs)
        return
    controls = []
    for index, (key, path) in enumerate(args.controls.items()):
        controls.append(transfer2_5.read_weights(path))
        print(f"read {controls[-1].describe()} -> branch {index} ('{key}')")
    # NVIDIA's multi-control net has no image context; one branch keeps it and the released single-branch names.
    state = transfer2_5.multi_control_state(base, controls, image_context=len(controls) == 1)
    if len(controls) == 1:
        state = transfer2_5.split(args.source, state).net_state()
    _write({transfer2_5.NET + k: v for k, v in state.items()}, args.output, args.dtype, inputs)


def to_official_2p5(args: argparse.Namespace, inputs: dict[str, str]) -> None:
    given = [name for name, value in (("--control-key", args.control_key), ("--finetune-base", args.finetune_base))
             if value]
    if given:
        raise files.WeightsFileError(
            f"{args.source} is a Cosmos-2.5 file, and {', '.join(given)} are options for Cosmos-Transfer1 files "
            "only: NVIDIA's 2.5 files always hold the base with the branch (model.pt, or "
            "branch_<b>.pt per branch of a joint model). Leave them out")
    found = transfer2_5.read_weights(args.source)
    print(f"read {found.describe()}")
    result = transfer2_5.to_official(found.net_state())
    if args.output.endswith(".pt"):
        if len(result) != 1:
            raise OutputPathError(f"the weights make {len(result)} official files ({sorted(result)}, one per "
                                  f"branch), which do not fit in one file {args.output}: give a folder as the output")
        _write(next(iter(result.values())), args.output, args.dtype, inputs)
        return
    for name, official in result.items():
        _write(official, os.path.join(args.output, name), args.dtype, inputs)


def to_ours(args: argparse.Namespace, inputs: dict[str, str]) -> None:
    if transfer2_5.is_2p5_file(args.source):
        return to_ours_2p5(args, inputs)
    base = transfer1.read_weights(args.source, use_ema=args.ema)
    print(f"read {base.describe()}")
    controls = {}
    for key, path in args.controls.items():
        controls[key] = transfer1.read_control(path, use_ema=args.ema)
        print(f"read {controls[key].describe()} -> branch '{key}'")
    blocks = DEFAULT_CONTROL_BLOCKS if args.num_control_blocks is None else args.num_control_blocks
    weights = transfer1.control_model_weights(base, controls, args.new_control, blocks, hint_key=args.control_key)
    _write(weights, args.output, args.dtype, inputs)


def to_official(args: argparse.Namespace, inputs: dict[str, str]) -> None:
    if transfer2_5.is_2p5_file(args.source):
        return to_official_2p5(args, inputs)
    found = transfer1.read_weights(args.source)
    print(f"read {found.describe()}")
    state = found.ours(args.control_key)
    single_file = args.output.endswith(".pt")
    has_branches = any(k.startswith(transfer1.CONTROL) for k in state)
    trained_base, why = transfer1.base_was_trained(args.source)
    if has_branches and (args.finetune_base or trained_base) and single_file:
        reason = "--finetune-base was given" if args.finetune_base else why
        raise OutputPathError(
            f"the base of {args.source} was trained ({reason}), and one file {args.output} would leave it out: "
            "give a folder as the output (it gets base_model.pt and each <key>_control.pt)")
    finetune_base = args.finetune_base or bool(trained_base)
    if finetune_base and not args.finetune_base and has_branches:
        print(f"writing the base too: it was trained ({why})")
    keys = [args.control_key] if args.control_key else None
    result = transfer1.to_official(state, keys, finetune_base=finetune_base)
    if single_file:
        if len(result.files) != 1:
            raise OutputPathError(f"the weights make {len(result.files)} official files ({sorted(result.files)}), "
                                  f"which do not fit in one file {args.output}: give a folder as the output, or one "
                                  "branch with --control-key KEY")
        ((name, official),) = result.files.items()
        _write(official, args.output, args.dtype, inputs)
    else:
        for name, official in result.files.items():
            _write(official, os.path.join(args.output, name), args.dtype, inputs)
    base_left = [k for k in result.left_out if k.startswith(transfer1.NET)]
    if base_left and trained_base is False:
        print(f"left out the base ({len(base_left)} net.* tensors): it was frozen ({why}), so it is NVIDIA's "
              f"{transfer1.BASE_FILE} unchanged")
    elif base_left:
        print(f"left out the base ({len(base_left)} net.* tensors): a frozen base is NVIDIA's {transfer1.BASE_FILE} "
              "unchanged; if the base was trained (model.finetune_base=True), write it too: a folder as the output "
              "and --finetune-base")
    _left_out([k for k in result.left_out if not k.startswith(transfer1.NET)], "no weights of NVIDIA's layouts")


def main(argv: list[str] | None = None) -> int:
    """Convert; the exit status of the error boundary (a user error: one paragraph, 2)."""
    return run_script("convert_checkpoint", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = _parse(argv)
    inputs = _inputs(args)
    folder_output = args.direction == "to-official" and not args.output.endswith(".pt")
    check_outputs({"OUTPUT": args.output}, inputs, folders=("OUTPUT",) if folder_output else ())
    (to_ours if args.direction == "to-ours" else to_official)(args, inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
