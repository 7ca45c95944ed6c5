"""Official Cosmos checkpoints <-> our weights, and our GeneralDIT names -> diffusers' CosmosTransformer3DModel.

Layouts
- Official Cosmos-1.0 / Transfer1 base file (`base_model.pt`, torch.save of a dict of tensors, possibly wrapped in
  {"model": ...} / {"state_dict": ...} / {"ema": ...}): `net.<GeneralDIT key>` plus the EDM uncertainty head
  `logvar.0.freqs`, `logvar.0.phases`, `logvar.1.weight`; Transformer Engine adds `..._extra_state` entries
  (FP8 metadata, no weights).
- Ours (a DiffusionModel's state dict, and the `.safetensors` files that `checkpoint.load_path` reads): the very
  same names, without `_extra_state`. GeneralDIT's own state dict is the `net.` part without the prefix.
So official -> ours unwraps, drops `_extra_state` (and anything that is neither `net.*` nor `logvar.*`, reported),
and adds `net.` to a bare network state dict; ours -> official is the inverse (names unchanged).

Files are read with torch.load(weights_only=True): never unpickle arbitrary objects.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import torch

NET_PREFIX = "net."
LOGVAR_PREFIX = "logvar."
# Keys official files carry that hold no weights of ours: TE FP8 metadata.
_NON_WEIGHT_SUFFIXES = ("_extra_state",)
# Top-level keys of a bare GeneralDIT state dict (one without the `net.` prefix).
_NET_TOP_LEVEL = ("x_embedder.", "pos_embedder.", "extra_pos_embedder.", "t_embedder.", "blocks.", "final_layer.",
                  "affline_norm.")


@dataclass
class Conversion:
    """Result of a conversion: the weights and what was left out (to print, never silently)."""

    state_dict: dict[str, torch.Tensor]
    dropped: list[str] = field(default_factory=list)


def unwrap(saved: object, use_ema: bool = False, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside an official file: itself, or its "model" / "state_dict" (or "ema" with use_ema) entry."""
    state = saved
    if use_ema:
        if not (isinstance(state, dict) and isinstance(state.get("ema"), dict)):
            raise ValueError(f"{source}: use_ema was asked but the file has no 'ema' state dict")
        state = state["ema"]
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{source}: expected a non-empty dict of tensors (a state dict), got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    bad = [k for k in bad if not str(k).endswith(_NON_WEIGHT_SUFFIXES)]  # TE's _extra_state may be bytes/None
    if bad:
        raise ValueError(f"{source}: expected a dict of tensors; these entries are not tensors: {bad[:5]}")
    return state


def official_to_ours(state: dict[str, torch.Tensor]) -> Conversion:
    """Official Cosmos base-model state dict -> our DiffusionModel weights (`net.*`, `logvar.*`)."""
    keys = [k for k in state if not k.endswith(_NON_WEIGHT_SUFFIXES)]
    dropped = [k for k in state if k.endswith(_NON_WEIGHT_SUFFIXES)]
    bare_net = not any(k.startswith(NET_PREFIX) for k in keys) and any(k.startswith(_NET_TOP_LEVEL) for k in keys)
    converted: dict[str, torch.Tensor] = {}
    for key in keys:
        if bare_net and key.startswith(_NET_TOP_LEVEL):
            converted[NET_PREFIX + key] = state[key]
        elif key.startswith((NET_PREFIX, LOGVAR_PREFIX)):
            converted[key] = state[key]
        else:
            dropped.append(key)
    if not any(k.startswith(NET_PREFIX) for k in converted):
        raise ValueError(
            "official_to_ours: no network weights found (expected keys like 'net.blocks.block0...' or "
            f"'blocks.block0...'); first keys: {list(state)[:5]}"
        )
    return Conversion(converted, sorted(dropped))


def ours_to_official(state: dict[str, torch.Tensor]) -> Conversion:
    """Our DiffusionModel weights -> the official layout (same names: `net.*`, `logvar.*`; other keys dropped)."""
    converted = {k: v for k, v in state.items() if k.startswith((NET_PREFIX, LOGVAR_PREFIX))}
    if not any(k.startswith(NET_PREFIX) for k in converted):
        raise ValueError(f"ours_to_official: no 'net.*' keys in the weights; first keys: {list(state)[:5]}")
    return Conversion(converted, sorted(set(state) - set(converted)))


def net_state_dict(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The GeneralDIT state dict inside model weights (strips `net.`)."""
    net = {k[len(NET_PREFIX):]: v for k, v in model_state.items() if k.startswith(NET_PREFIX)}
    if not net:
        raise ValueError(f"net_state_dict: no 'net.*' keys; first keys: {list(model_state)[:5]}")
    return net


def torch_load_weights(path: str) -> object:
    """torch.load(weights_only=True), also accepting the io.BytesIO objects in which older Transformer Engine
    releases stored `_extra_state` (a harmless container of bytes; nothing else outside tensors is allowed)."""
    with torch.serialization.safe_globals([io.BytesIO]):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def load_official(path: str, use_ema: bool = False) -> Conversion:
    """Read an official `.pt` (weights_only=True) and convert it to our weights."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"official checkpoint {path} does not exist")
    return official_to_ours(unwrap(torch_load_weights(path), use_ema=use_ema, source=path))


def load_weights_file(path: str) -> dict[str, torch.Tensor]:
    """Our weights from a `.safetensors` or `.pt` file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    return unwrap(torch_load_weights(path), source=path)


def save_weights_file(state: dict[str, torch.Tensor], path: str, dtype: torch.dtype | None = None) -> None:
    """Save weights as `.safetensors` (ours) or `.pt` (torch.save of a plain dict, the official container)."""
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    elif path.endswith(".pt"):
        torch.save({k: v.contiguous() for k, v in state.items()}, path)
    else:
        raise ValueError(f"save_weights_file: {path} must end in .safetensors or .pt")


# ------------------------------------------------------------------------------------------------------ diffusers
# Official / ours -> diffusers CosmosTransformer3DModel (the name map of diffusers' convert_cosmos_to_diffusers.py,
# Cosmos 1.0). Applied in order as substring replacements on the key without its `blocks.blockN` part.
_DIFFUSERS_RENAMES = (
    ("t_embedder.1", "time_embed.t_embedder"),
    ("affline_norm", "time_embed.norm"),
    (".blocks.0.block.attn", ".attn1"),
    (".blocks.1.block.attn", ".attn2"),
    (".blocks.2.block", ".ff"),
    (".blocks.0.adaLN_modulation.1", ".norm1.linear_1"),
    (".blocks.0.adaLN_modulation.2", ".norm1.linear_2"),
    (".blocks.1.adaLN_modulation.1", ".norm2.linear_1"),
    (".blocks.1.adaLN_modulation.2", ".norm2.linear_2"),
    (".blocks.2.adaLN_modulation.1", ".norm3.linear_1"),
    (".blocks.2.adaLN_modulation.2", ".norm3.linear_2"),
    ("to_q.0", "to_q"),
    ("to_q.1", "norm_q"),
    ("to_k.0", "to_k"),
    ("to_k.1", "norm_k"),
    ("to_v.0", "to_v"),
    ("layer1", "net.0.proj"),
    ("layer2", "net.2"),
    ("proj.1", "proj"),
    ("x_embedder", "patch_embed"),
    ("extra_pos_embedder", "learnable_pos_embed"),
    ("final_layer.adaLN_modulation.1", "norm_out.linear_1"),
    ("final_layer.adaLN_modulation.2", "norm_out.linear_2"),
    ("final_layer.linear", "proj_out"),
)


def net_to_diffusers(net_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GeneralDIT state dict -> CosmosTransformer3DModel state dict (RoPE `seq` buffer dropped: diffusers has none)."""
    out = {}
    for key, value in net_state.items():
        if key == "pos_embedder.seq" or key.endswith(_NON_WEIGHT_SUFFIXES):
            continue
        new_key = key
        if key.startswith("blocks.block"):
            index, rest = key[len("blocks.block"):].split(".", 1)
            new_key = f"transformer_blocks.{index}.{rest}"
        for old, new in _DIFFUSERS_RENAMES:
            new_key = new_key.replace(old, new)
        out[new_key] = value
    return out
