"""NVIDIA's Cosmos-2.5 weight files (Transfer2.5 and Predict2.5): read into our names, split, and written back.

Our names are NVIDIA's: networks/dit_v2_5.py (Cosmos25DiT) and dit_v2_5_control.py (Cosmos25ControlDiT) name their
modules as MiniTrainDIT / MinimalV4LVGControlVaceDiT do, and a model holds its network as `net.*`, so a layout is a
matter of which keys are weights and which branch they belong to.

    weights = read_weights("general/edge/<uuid>_ema_bf16.pt")    # says what it found
    print(weights.describe())
    net.load_state_dict(weights.net_state(), strict=True)        # a Cosmos25ControlDiT (one branch)
    net.load_state_dict(multi_control_state(base, [edge, depth, seg, blur]), strict=True)   # N branches

Facts (nvidia-cosmos/cosmos-transfer2.5 @ 2ff49d07, cross-checked with diffusers' scripts/convert_cosmos_to_diffusers.py
TRANSFORMER_SPECIAL_KEYS_REMAP_COSMOS_2_0 and its Transfer split):
- `general/{edge,blur,depth,seg}/<uuid>_ema_bf16.pt` is ONE state dict, `net.` + the network: the base (x_embedder,
  t_embedder, t_embedding_norm, blocks.N, final_layer, crossattn_proj, img_context_proj) and its one control
  branch (`control_embedder.proj.1`, `control_blocks.N` with `before_proj` on block 0 and `after_proj` on each);
  diffusers splits the two by the substring "control". Predict2.5's `base/{pre,post}-trained/*_ema_bf16.pt` hold
  the base only. A `{"model": ...}` / `{"state_dict": ...}` wrapper is unwrapped as diffusers' get_state_dict does.
- Entries that hold no weights of ours, left out and reported: the RoPE buffers `pos_embedder.{seq,
  dim_spatial_range, dim_temporal_range}` (persistent in NVIDIA's code, bf16-rounded in released files; ours are
  recomputed in float32), the training counters `accum_{video_sample_counter, image_sample_counter, iteration,
  train_in_hours}` (WeightTrainingStat), and Transformer Engine `_extra_state`.
- Several controls (minimal_v4_lvg_dit_control_vace.py, vid2vid_model_control_vace_rectified_flow.py
  load_multi_branch_checkpoints): branch b's file provides `control_blocks_{b}` (from its `control_blocks`) and
  `control_embedder.{b}` (from `control_embedder`); NVIDIA's released multi-control net has no image context.
Files are read with torch.load(weights_only=True) (checkpoints/files.py). Not verified against a downloaded file here
(none is on this machine): the layout comes from NVIDIA's module names and diffusers' converter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from cosmos_transfer.checkpoints import files

NET = "net."
LAYOUTS = {
    "transfer2.5": "a Cosmos-Transfer2.5 file: net.* = the base and one control branch (control_embedder, "
                   "control_blocks; general/{edge,blur,depth,seg}/*_ema_bf16.pt)",
    "transfer2.5-multi": "a multi-control network: net.* = the base and branches control_blocks_<b> / "
                         "control_embedder.<b> (NVIDIA's num_control_branches > 1; written by multi_control_state)",
    "predict2.5": "a Cosmos-Predict2.5 base: net.* without control branch (base/{pre,post}-trained/*_ema_bf16.pt)",
    "bare": "a 2.5 network state dict without the net. prefix",
}
# Keys of a 2.5 network (to recognize one; no Cosmos-1.0 file has them).
_MARKERS = ("t_embedding_norm.", "crossattn_proj.", "final_layer.adaln_modulation.")
_BLOCK_MARKER = re.compile(r"^blocks\.\d+\.(self_attn|cross_attn|mlp|adaln_modulation_)")
_BASE_MODULES = ("x_embedder", "t_embedder", "t_embedding_norm", "blocks", "final_layer", "crossattn_proj",
                 "img_context_proj")
_NON_WEIGHTS = re.compile(r"^(pos_embedder\.|accum_)|_extra_state$")
_MULTI = re.compile(r"^(control_blocks_(\d+)\.|control_embedder\.(\d+)\.)")
_IMAGE_CONTEXT = re.compile(r"^img_context_proj\.|\.cross_attn\.(q_img|k_img|v_img|q_img_norm|k_img_norm)\.")


def is_cosmos_2p5(state: dict) -> bool:
    """Whether a state dict (net.-prefixed or bare) is of a Cosmos-2.5 network."""
    for key in state:
        name = key[len(NET):] if isinstance(key, str) and key.startswith(NET) else key
        if isinstance(name, str) and (name.startswith(_MARKERS) or _BLOCK_MARKER.match(name)):
            return True
    return False


@dataclass
class Weights25:
    """A 2.5 weights file in our names.

    base: the base network's tensors (Cosmos25DiT names, no prefix).
    branches: branch index -> its tensors in single-branch names (`control_embedder.proj.1.weight`,
        `control_blocks.N.*`); a released Transfer2.5 file has one branch, 0.
    """

    path: str
    layout: str
    base: dict[str, torch.Tensor] = field(default_factory=dict)
    branches: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"{self.path}: {LAYOUTS[self.layout]}", f"holds the base ({len(self.base)} tensors)"]
        for b, branch in self.branches.items():
            blocks = len({k.split(".")[1] for k in branch if k.startswith("control_blocks.")})
            parts.append(f"control branch {b} ({blocks} control blocks, {len(branch)} tensors)")
        if self.left_out:
            shown = ", ".join(self.left_out[:4]) + (" ..." if len(self.left_out) > 4 else "")
            parts.append(f"left out {len(self.left_out)} entries that hold no weights of ours ({shown})")
        return "; ".join(parts)

    def net_state(self) -> dict[str, torch.Tensor]:
        """The network's state dict (no prefix): for a Cosmos25ControlDiT with as many branches as the file has
        (one: `control_blocks`, `control_embedder`), or a Cosmos25DiT when the file has none."""
        state = dict(self.base)
        if len(self.branches) == 1:
            state.update(next(iter(self.branches.values())))
        else:
            for b, branch in self.branches.items():
                state.update(_to_branch(branch, b))
        return state

    def model_state(self) -> dict[str, torch.Tensor]:
        """The same as a model's state dict (`net.*`), NVIDIA's layout."""
        return {NET + k: v for k, v in self.net_state().items()}


def _to_branch(branch: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    """Single-branch names -> the names of branch b of a multi-branch net."""
    out = {}
    for key, value in branch.items():
        if key.startswith("control_blocks."):
            out[f"control_blocks_{b}." + key[len("control_blocks."):]] = value
        else:
            out[f"control_embedder.{b}." + key[len("control_embedder."):]] = value
    return out


# ------------------------------------------------------------------------------------------------------- reading
def read_weights(path: str) -> Weights25:
    """Read a Cosmos-2.5 weights file (.pt or .safetensors) and sort its tensors into base, branches, left out."""
    return split(path, _state_of(path))


def is_2p5_file(path: str) -> bool:
    """Whether a weights file holds a Cosmos-2.5 network (.pt files are memory-mapped: cheap to ask). False for a
    file that is no flat state dict (e.g. a Transfer1 training checkpoint): its own reader says what it is."""
    try:
        return is_cosmos_2p5(_state_of(path, check_values=False))  # names only: the reader checks the values
    except files.WeightsFileError:
        return False


def _state_of(path: str, check_values: bool = True) -> dict:
    raw = files.load_weights_file(path, "Cosmos-2.5 weights file", check_values=check_values)
    state = raw
    for wrapper in ("model", "module", "state_dict"):  # as diffusers' get_state_dict
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        keys = f" with keys {[str(k) for k in state][:8]}" if isinstance(state, dict) else ""
        raise files.WeightsFileError(f"{path}: expected a dict of tensors (a state dict), got "
                                     f"{type(state).__name__}{keys}")
    return state


def split(path: str, state: dict) -> Weights25:
    """Recognize the layout of a flat 2.5 state dict (net.-prefixed or bare) and split it."""
    if not is_cosmos_2p5(state):
        raise files.WeightsFileError(
            f"{path}: not a Cosmos-2.5 network (no t_embedding_norm, crossattn_proj or blocks.N.self_attn keys); its "
            f"first keys are {[str(k) for k in state][:8]}. A Cosmos-Transfer1 / Cosmos-1.0 file goes with a "
            "Transfer1 experiment and other Transfer1 files: the two families do not mix")
    prefixed = any(isinstance(k, str) and k.startswith(NET) for k in state)
    base: dict[str, torch.Tensor] = {}
    branches: dict[int, dict[str, torch.Tensor]] = {}
    left_out: list[str] = []
    for key, value in state.items():
        name = key[len(NET):] if prefixed and isinstance(key, str) and key.startswith(NET) else key
        if not isinstance(value, torch.Tensor) or not isinstance(key, str) or (prefixed and name is key) \
                or _NON_WEIGHTS.search(name):
            left_out.append(str(key))
            continue
        multi = _MULTI.match(name)
        if multi:
            b = int(multi.group(2) or multi.group(3))
            single = ("control_blocks." if multi.group(2) else "control_embedder.") + name[multi.end():]
            branches.setdefault(b, {})[single] = value
        elif name.startswith(("control_blocks.", "control_embedder.")):
            branches.setdefault(0, {})[name] = value
        elif name.split(".")[0] in _BASE_MODULES:
            base[name] = value
        else:
            raise files.WeightsFileError(
                f"{path}: {key} belongs to a layer that Cosmos25DiT / Cosmos25ControlDiT do not build (e.g. NVIDIA's "
                "training-only variants: input_hint_block, separate embedders for the control branch, the "
                "multi-branch after_proj, a learnable extra_pos_embedder); expected only "
                f"{', '.join(_BASE_MODULES)}, control_blocks[_<b>], control_embedder[.<b>]")
    if not prefixed:
        layout = "bare"
    elif len(branches) > 1 or any(_MULTI.match(k[len(NET):]) for k in state if isinstance(k, str)
                                  and k.startswith(NET)):
        layout = "transfer2.5-multi"
    else:
        layout = "transfer2.5" if branches else "predict2.5"
    return Weights25(path, layout, base, dict(sorted(branches.items())), sorted(left_out))


# ------------------------------------------------------------------------------------------- loading into a model
# The layers a new branch has that no base file holds (NVIDIA starts them fresh: zero before/after_proj, a new
# control_embedder); checkpoint.allowed_missing_keys for a Transfer2.5 model started from a Predict2.5 base.
NEW_BRANCH_KEY_PATTERNS = ("net.control_embedder.*", "net.control_blocks*.before_proj.*",
                           "net.control_blocks*.after_proj.*")
_MODEL_BRANCH = re.compile(r"^net\.control_blocks(?:_(\d+))?\.(\d+)\.(.+)$")


def model_weights(path: str, model_keys) -> tuple[dict[str, torch.Tensor], str]:
    """The weights of a 2.5 model (`net.*` keys: Cosmos25Model) from a 2.5 file, and a line saying what it held.

    A file with as many branches as the model fills them; a base-only file (Predict2.5) starts each branch of the
    model from the base, control block i <- base block i (NVIDIA's copy_weights_to_control_branch "first_n"), leaving
    NEW_BRANCH_KEY_PATTERNS missing; a model without branches takes a file's base only. Other combinations are
    refused with what to do."""
    found = read_weights(path)
    description = found.describe()
    model_keys = set(model_keys)
    model_branches = sorted({int(m.group(1) or 0) for k in model_keys if (m := _MODEL_BRANCH.match(k))})
    state = dict(found.base)
    if not model_branches:
        if found.branches:
            description += "; its control branch is not used (the model has none)"
    elif len(found.branches) == len(model_branches):
        state = found.net_state()
    elif not found.branches:
        for key in model_keys:
            match = _MODEL_BRANCH.match(key)
            base_key = match and f"blocks.{match.group(2)}.{match.group(3)}"
            if match and base_key in found.base:
                state[key[len(NET):]] = found.base[base_key]
        description += f"; the model's {len(model_branches)} control branch(es) started from its base blocks"
    else:
        raise files.WeightsFileError(
            f"checkpoint.load_path={path} holds {len(found.branches)} control branch(es), the model has "
            f"{len(model_branches)}: combine one released file per branch first, in the model's hint-key order: "
            "scripts/convert_checkpoint.py to-ours BASE.pt joint.safetensors --control edge=EDGE.pt "
            "--control vis=BLUR.pt ...")
    return {NET + k: v for k, v in state.items()}, description


# ------------------------------------------------------------------------------------------------------- combining
def multi_control_state(base: Weights25, controls: Sequence[Weights25], image_context: bool = False
                        ) -> dict[str, torch.Tensor]:
    """State dict of a Cosmos25ControlDiT with len(controls) branches: the base from `base`, branch b from the one
    branch of controls[b] (each a released Transfer2.5 file), as NVIDIA's load_multi_branch_checkpoints.

    image_context: keep the image cross-attention weights (img_context_proj, q/k/v_img); NVIDIA's released
    multi-control net has none (extra_image_context_dim=None), so they are left out by default."""
    if not controls:
        raise files.WeightsFileError("no control files to combine (--control KEY=PATH)")
    state = dict(base.base)
    for b, control in enumerate(controls):
        if len(control.branches) != 1:
            raise files.WeightsFileError(
                f"{control.path} holds {len(control.branches)} control branches ({LAYOUTS[control.layout]}); each "
                "control file must hold exactly one (a released general/<modality>/*_ema_bf16.pt)")
        state.update(_to_branch(next(iter(control.branches.values())), b))
    if not image_context:
        state = {k: v for k, v in state.items() if not _IMAGE_CONTEXT.search(k)}
    return state


# ------------------------------------------------------------------------------------------------------- writing
def to_official(net_state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A Cosmos25DiT / Cosmos25ControlDiT state dict (no prefix) -> NVIDIA's files, name -> state dict (`net.*`):
    `model.pt` for a base or a one-branch net (the layout of the released files), and `branch_<b>.pt` (base + that
    branch in single-branch names, a released file's layout) for each branch of a multi-branch net."""
    if not is_cosmos_2p5(net_state):
        raise files.WeightsFileError(f"not a Cosmos-2.5 network state dict; first keys: {list(net_state)[:5]}")
    weights = split("<state dict>", net_state)
    if len(weights.branches) <= 1 and not any(_MULTI.match(k) for k in net_state):
        return {"model.pt": {NET + k: v for k, v in weights.net_state().items()}}
    return {f"branch_{b}.pt": {NET + k: v for k, v in {**weights.base, **branch}.items()}
            for b, branch in weights.branches.items()}
