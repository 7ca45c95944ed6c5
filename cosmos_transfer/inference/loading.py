"""Building the generation model from a training config and loading its weights.

The model is the training model (same code): the experiment's `model` config is instantiated and its weights come
from one of
- our training checkpoints: a DCP folder `iter_*`, a job's `checkpoints/` folder or the job folder itself (latest
  checkpoint); EMA weights by default (`use_ema`), the plain ones when the run had no EMA;
- a `.safetensors` (or `.pt`) file of ours (scripts/export_checkpoint.py, scripts/convert_checkpoint.py);
- official Cosmos files in any layout NVIDIA ships (checkpoints/transfer1.py: `base_model.pt`, net.* files,
  base+control files), plus, for each hint key, an official control file such as `edge_control.pt`
  (`control_checkpoints={"edge": path}`).
All files are read with weights_only=True.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException

from cosmos_transfer.dtypes import torch_dtype


def compose_config(experiment: str, overrides: list[str] | None = None, *, make_config: Callable[[], Any]) -> Any:
    """The training config of `experiment` with Hydra `overrides`, as scripts/train.py composes it. `make_config` is
    the application's (configs/train.py's, or a --config file's through load_make_config): the library does not
    import the application's configs/ package."""
    from cosmos_transfer.config.compose import override

    return override(make_config(), [f"experiment={experiment}", *(overrides or [])])


def resolve_checkpoint(path: str) -> str:
    """A weights file or DCP folder named by `path`: itself, or the latest checkpoint of a job or checkpoints folder."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if os.path.isfile(os.path.join(path, ".metadata")):
        return path
    from cosmos_transfer.trainer.checkpoint import read_latest_name

    for folder in (path, os.path.join(path, "checkpoints")):
        name = read_latest_name(folder)  # a checkpoint inside `folder`, never a path out of it
        if name is not None:
            return os.path.join(folder, name)
    raise FileNotFoundError(
        f"{path} is neither a weights file, a DCP checkpoint (no .metadata) nor a job/checkpoints folder with "
        "latest_checkpoint.txt"
    )


def build_model(config: Any) -> nn.Module:
    """Instantiate the config's model in eval mode (its EMA, `config.ema`, is training's: the EMA's weights come with
    the checkpoint)."""
    from cosmos_transfer.config.lazy import instantiate

    return instantiate(config.model).eval()


def load_weights(
    model: nn.Module,
    checkpoint: str,
    *,
    use_ema: bool = True,
    control_checkpoints: dict[str, str] | None = None,
    report: Callable[[str], None] | None = None,
) -> list[str]:
    """Load `checkpoint` (ours, or an official file in any layout of checkpoints/transfer1.py) and official control
    files into `model`; returns the loaded keys. Every key of the model must be provided by one of the files.
    `use_ema` applies to our training checkpoints (the EMA's weights where the run kept an EMA). `report` gets one
    line per file saying which layout it has."""
    from cosmos_transfer.trainer.checkpoint import load_model_weights

    control_checkpoints = dict(control_checkpoints or {})
    allowed_missing = [f"net_ctrl.{key}.*" for key in control_checkpoints]
    if control_checkpoints:
        allowed_missing.append("logvar.*")  # the control files carry the uncertainty head of the control model
    path = resolve_checkpoint(checkpoint)
    # EMA or not is a choice inside our training checkpoints (DCP folders); a file holds the weights it was
    # exported or converted with.
    use_ema = use_ema and os.path.isdir(path)
    try:
        loaded = load_model_weights(model, path, strict=True, allowed_missing_keys=allowed_missing, use_ema=use_ema,
                                    report=report)
    except CheckpointException as error:  # DCP wraps shape mismatches: keep the one line that says what is wrong
        lines = [line.strip() for line in str(error).splitlines() if "mismatch" in line.lower()]
        raise ValueError(
            f"checkpoint {path} does not fit the model built from this experiment ({lines[0] if lines else error}); "
            "build the model as in training (same experiment and the same model overrides after --)"
        ) from None
    for key, control_path in control_checkpoints.items():
        loaded += load_control_file(model, key, control_path, report=report)
    return sorted(set(loaded))  # a branch started from the base file is then replaced by its control file


def load_control_file(model: nn.Module, hint_key: str, path: str,
                      report: Callable[[str], None] | None = None) -> list[str]:
    """Load a file holding one control branch (an official `edge_control.pt`, a base+control file, ...) into the
    model's branch for `hint_key`, with the `logvar.*` saved beside it; a base inside the file is not used."""
    from cosmos_transfer.checkpoints import transfer1

    if not os.path.isfile(path):
        raise FileNotFoundError(f"control checkpoint {path} (for '{hint_key}') does not exist")
    if getattr(model, "net_ctrl", None) is None and getattr(model, "hint_keys", None):  # a Cosmos-2.5 model
        raise ValueError(
            f"control checkpoint {path} (for '{hint_key}'): a Cosmos-2.5 model's branches live in its one network; "
            "give a released Transfer2.5 file (base and branch) as --checkpoint, or, for several controls, combine "
            "the released files first: scripts/convert_checkpoint.py to-ours BASE.pt joint.safetensors "
            "--control edge=EDGE.pt --control vis=BLUR.pt ... (docs/INFERENCE.md)")
    branches = getattr(model, "net_ctrl", None)
    if branches is None or hint_key not in branches:
        have = sorted(branches.keys()) if branches is not None else []
        raise ValueError(f"control checkpoint {path}: the model has no '{hint_key}' branch (its branches: {have})")
    found = transfer1.read_control(path)
    if report is not None:
        unused = " (its base is not used: the base comes from --checkpoint)" if found.has_base else ""
        report(found.describe() + unused)
    weights = transfer1.branch_of(found, hint_key)
    own = model.state_dict()
    expected = {k for k in own if k.startswith(f"net_ctrl.{hint_key}.")}
    missing = sorted(expected - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"control checkpoint {path} does not match the model's '{hint_key}' branch: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    for key, value in weights.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(f"control checkpoint {path}: {key} has shape {tuple(value.shape)}, the model expects "
                             f"{tuple(own[key].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()}, strict=False)
    return sorted(weights)


def prepare_for_inference(model: nn.Module, device: str | torch.device, dtype: str | None = None) -> nn.Module:
    """Move the model to `device` and cast its networks (not the tokenizer) to `dtype` ("bfloat16" for the 7B)."""
    model.to(device)
    if dtype is not None:
        target = torch_dtype(dtype)
        for child in model.children():  # the tokenizer is not a child (DiffusionModel keeps it aside)
            child.to(target)
    return model.eval().requires_grad_(False)
