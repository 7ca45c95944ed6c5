"""NVIDIA's Cosmos-Transfer1 / Cosmos-1.0 weight files: every layout they ship, read into our names, and written back.

Our names (the state dict of DiffusionModel / ControlDiffusionModel): the base network `net.<GeneralDIT key>`, the
uncertainty head `logvar.*`, the branch of hint key K `net_ctrl.K.<GeneralDITControl key>`. NVIDIA's GeneralDIT and
GeneralDITEncoder name their modules as ours do, so a layout is a matter of prefixes (see LAYOUTS).

    weights = read_weights("base_model.pt")          # any layout below, or our own files; says what it found
    print(weights.describe())
    ours = weights.ours()                           # net.*, logvar.* (+ net_ctrl.K.* with ours(hint_key=K))

Facts from NVIDIA's code (nvidia-cosmos/cosmos-transfer1) that shape the reading:
- Containers: a training checkpoint `iter_*.pt` is {"model": {"model": <state dict>, "ema": <state dict> | None},
  "optimizer", "scheduler", "grad_scaler", "iteration"} (utils/checkpointer.py save, training/models/model_image.py
  state_dict); only the weights are read, the rest is left out and reported. EMA state dicts spell "." as "-" and lack
  the buffers `net.pos_embedder.seq`, `logvar.0.freqs`, `logvar.0.phases` (training/models/model_ctrl.py
  load_base_model and scripts/convert_ckpt_tp_to_fsdp.py replace "-" and copy those buffers from the model); we do
  the same. NVIDIA's training loader prefers the EMA when a file has one; here `use_ema` chooses (reported).
- Transformer Engine `_extra_state` entries hold no weights (inference_utils.py non_strict_load_model skips them).
- Tensor-parallel shards (`*_model_mp_<rank>.pt`) hold slices of the weights; they are refused with what to do.
Files are read with torch.load(weights_only=True) (checkpoints/files.py), never unpickling arbitrary objects.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from cosmos_transfer.checkpoints import files, transfer2_5

NET, LOGVAR, CONTROL = "net.", "logvar.", "net_ctrl."
OFFICIAL_BASE = "base_model."  # the prefix of the base inside NVIDIA's control model
BASE_FILE = "base_model.pt"

# Layout -> how to recognize it and who writes it (cosmos-transfer1 paths).
LAYOUTS = {
    "base_model": "base_model.pt: the base as base_model.net.* + base_model.logvar.* (Cosmos-Transfer1-7B "
                  "base_model.pt; read into the control model by diffusion/inference/inference_utils.py "
                  "load_network_model)",
    "net": "a base model as net.* + logvar.* (Cosmos-1.0 base files, the Sample-AV base; our own DiffusionModel files)",
    "control": "<key>_control.pt: a control branch as net.* with x_embedder2/input_hint_block/zero_blocks, + logvar.* "
               "(edge_control.pt, vis_control.pt, ...; scripts/convert_ckpt_tp_to_fsdp.py *_ema_model_only.pt)",
    "base+control": "base and branch in one file: base_model.net.*, base_model.logvar.*, net.* (branch), logvar.* "
                    "(distillation/scripts/combine_base_ctrl_ckpt.py, convert_ckpt_tp_to_fsdp.py --include-base-model)",
    "distilled": "a distilled control model: net.base_model.net.* (base) + net.net_ctrl.* (branch) "
                 "(diffusion/inference/world_generation_pipeline.py DistilledControl2WorldGenerationPipeline)",
    "bare": "a GeneralDIT state dict without prefix (x_embedder.*, blocks.*, ...)",
    "ours": "our control model: net.*, logvar.*, net_ctrl.<key>.* (scripts/export_checkpoint.py, "
            "convert_checkpoint.py)",
}
# Top-level modules of a GeneralDIT state dict (to recognize a bare one).
_NET_TOP_LEVEL = ("x_embedder.", "pos_embedder.", "extra_pos_embedder.", "t_embedder.", "blocks.", "final_layer.",
                  "affline_norm.")
_WRAPPERS = ("model", "state_dict", "module")
# NVIDIA's EMA state dicts lack these buffers; its converter copies them from the model (convert_ckpt_tp_to_fsdp.py).
_EMA_MISSING_BUFFERS = ("pos_embedder.seq", "logvar.0.freqs", "logvar.0.phases")
_TP_SHARD = re.compile(r"_model_mp_\d+\.pt$")


@dataclass
class WeightsFile:
    """What a weights file holds, in our names, and how it was read.

    base: the base model's weights (`net.*`, `logvar.*`; empty when the file has no base).
    branches: hint key -> GeneralDITControl state dict. Official files do not say which hint key their branch is
        for: their one branch is under None, and `ours(hint_key)` names it.
    branch_logvar: the `logvar.*` saved with an official branch (the control model's head).
    """

    path: str
    layout: str
    base: dict[str, torch.Tensor] = field(default_factory=dict)
    branches: dict[str | None, dict[str, torch.Tensor]] = field(default_factory=dict)
    branch_logvar: dict[str, torch.Tensor] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def has_base(self) -> bool:
        return any(k.startswith(NET) for k in self.base)

    @property
    def official_branch(self) -> dict[str, torch.Tensor] | None:
        return self.branches.get(None)

    def describe(self) -> str:
        parts = [f"{self.path}: {LAYOUTS[self.layout]}"]
        held = []
        if self.has_base:
            held.append(f"the base ({sum(k.startswith(NET) for k in self.base)} tensors)")
        for key, branch in self.branches.items():
            held.append(f"{'a' if key is None else repr(key)} control branch ({len(branch)} tensors)")
        parts.append("holds " + " and ".join(held))
        parts += self.notes
        if self.left_out:
            shown = ", ".join(self.left_out[:4]) + (" ..." if len(self.left_out) > 4 else "")
            parts.append(f"left out {len(self.left_out)} entries that hold no weights of ours ({shown})")
        return "; ".join(parts)

    def ours(self, hint_key: str | None = None) -> dict[str, torch.Tensor]:
        """Our weights: the base, and the branches as `net_ctrl.K.*` (the official branch as `hint_key`; its
        `logvar.*` replaces the base's, as the control file is loaded after the base in NVIDIA's pipeline)."""
        weights = dict(self.base)
        for key, branch in self.branches.items():
            if key is None:
                if hint_key is None:
                    raise files.WeightsFileError(
                        f"{self.path} holds a control branch ({LAYOUTS[self.layout]}) without saying which hint key "
                        "it is for: name it (convert_checkpoint.py --control-key KEY, e.g. edge)")
                key = hint_key
                weights.update(self.branch_logvar)
            weights.update({f"{CONTROL}{key}.{name}": value for name, value in branch.items()})
        return weights


# ------------------------------------------------------------------------------------------------------- reading
def read_weights(path: str, use_ema: bool = False, net_keys: Sequence[str] = (), lazy: bool = False) -> WeightsFile:
    """Read any weights file of ours or NVIDIA's (.pt, .safetensors) and say which layout it has.

    use_ema: take the file's EMA weights ("ema" of a training checkpoint); an error when it has none.
    net_keys: the names of the network a bare state dict would be for (besides GeneralDIT's, recognized anyway).
    lazy: read no tensor data yet (files.load_weights_file; each rank then reads its rows, trainer/shard_loading.py)."""
    if _TP_SHARD.search(path):
        raise files.WeightsFileError(
            f"{path} is one tensor-parallel shard of a checkpoint (NVIDIA's TP training writes one "
            "<name>_model_mp_<rank>.pt per rank, each with slices of the weights): merge the shards into one file with "
            "NVIDIA's scripts/convert_ckpt_tp_to_fsdp.py first, and read that file"
        )
    if use_ema and path.endswith(".safetensors"):
        raise files.WeightsFileError(
            f"{path}: a safetensors file holds one set of weights; export the EMA weights with "
            "scripts/export_checkpoint.py --ema and load that file without asking for the EMA"
        )
    raw = files.load_weights_file(path, "checkpoint", lazy=lazy)
    state, notes, left_out = _unwrap(raw, use_ema, path)
    tensors = {}
    for key, value in state.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor) and not key.endswith("_extra_state"):
            tensors[key] = value
        else:
            left_out.append(str(key))
    if transfer2_5.is_cosmos_2p5(tensors):  # its net.* would otherwise pass for a Cosmos-1.0 base
        raise files.WeightsFileError(
            f"{path} holds a Cosmos-2.5 network (Predict2.5 / Transfer2.5 names such as t_embedding_norm, "
            "blocks.N.self_attn), where a Cosmos-Transfer1 / Cosmos-1.0 one is needed: it goes with "
            "a 2.5 experiment (transfer2p5_*, predict2p5_*) and other 2.5 files: the two families do not mix"
        )
    weights = _split(path, tensors, tuple(net_keys))
    weights.notes = notes + weights.notes
    weights.left_out = sorted(left_out) + weights.left_out
    return weights


def _is_state_dict(value: object) -> bool:
    return isinstance(value, dict) and any(isinstance(v, torch.Tensor) for v in value.values())


def _unwrap(saved: object, use_ema: bool, path: str) -> tuple[dict, list[str], list[str]]:
    """The state dict inside a container: {"model": ...}, {"state_dict": ...}, a training checkpoint's
    {"model": {"model", "ema"}, "optimizer", ...}; returns (state dict, notes, entries left out)."""
    notes: list[str] = []
    left_out: list[str] = []
    state = saved
    took_ema = False
    for _ in range(4):  # a few levels of containers at most
        if not isinstance(state, dict) or _is_state_dict(state):
            break
        inner_key = next((k for k in _WRAPPERS if isinstance(state.get(k), dict)), None)
        ema = state.get("ema")
        if use_ema and isinstance(ema, dict) and ema:
            chosen = {k.replace("-", "."): v for k, v in ema.items()}
            model = state.get(inner_key, {}) if inner_key else {}
            filled = [k for k in model if k.endswith(_EMA_MISSING_BUFFERS) and k not in chosen]
            chosen.update({k: model[k] for k in filled})
            notes.append("took the EMA weights ('ema')" + (f" and the buffers {filled} from 'model'" if filled else ""))
            left_out += [str(k) for k in state if k != "ema"]
            state, took_ema = chosen, True
        elif inner_key is not None:
            if isinstance(ema, dict) and ema:
                notes.append("it also holds EMA weights ('ema'), not taken (--ema / checkpoint.load_ema take them; "
                             "NVIDIA's training loader prefers them)")
            left_out += [str(k) for k in state if k != inner_key]
            state = state[inner_key]
        else:
            break
    if not isinstance(state, dict) or not _is_state_dict(state):
        keys = f" with keys {[str(k) for k in state][:8]}" if isinstance(state, dict) else ""
        raise files.WeightsFileError(
            f"{path}: expected a dict of tensors (a state dict), got {type(state).__name__}{keys}")
    if use_ema and not took_ema:
        raise files.WeightsFileError(f"{path}: EMA weights were asked for, but the file has no 'ema' state dict")
    return state, notes, left_out


def _with_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _is_branch(net: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("x_embedder2.") for k in net)


def _split(path: str, state: dict[str, torch.Tensor], net_keys: tuple[str, ...] = ()) -> WeightsFile:
    """Recognize the layout of a flat state dict and sort its tensors into base, branches and left out."""
    used: set[str] = set()

    def take(prefix: str, rename: str = "") -> dict[str, torch.Tensor]:
        part = {k: v for k, v in state.items() if k.startswith(prefix)}
        used.update(part)
        return {rename + k[len(prefix):]: v for k, v in part.items()}

    keys = list(state)
    if any(k.startswith(CONTROL) for k in keys):
        branch_keys = sorted({k.split(".")[1] for k in keys if k.startswith(CONTROL) and k.count(".") >= 2})
        result = WeightsFile(path, "ours", base={**take(NET, NET), **take(LOGVAR, LOGVAR)},
                             branches={key: take(f"{CONTROL}{key}.") for key in branch_keys})
    elif any(k.startswith(("net.base_model.net.", "net.net_ctrl.")) for k in keys):
        base = {**take("net.base_model.net.", NET), **take("net.base_model.logvar.", LOGVAR)}
        result = WeightsFile(path, "distilled", base=base, branches={None: take("net.net_ctrl.")},
                             branch_logvar=take(LOGVAR, LOGVAR))
    elif any(k.startswith(OFFICIAL_BASE + NET) for k in keys):
        base = {**take(OFFICIAL_BASE + NET, NET), **take(OFFICIAL_BASE + LOGVAR, LOGVAR)}
        net = _with_prefix(state, NET)
        if net and not _is_branch(net):
            raise _unknown(path, state, "it has base_model.net.* and also a net.* that is no control branch")
        if net:
            result = WeightsFile(path, "base+control", base=base, branches={None: take(NET)},
                                 branch_logvar=take(LOGVAR, LOGVAR))
        else:
            # A top-level logvar.* beside base_model.* is the same head (NVIDIA's control model shares its base's).
            result = WeightsFile(path, "base_model", base={**take(LOGVAR, LOGVAR), **base})
    elif any(k.startswith(NET) for k in keys):
        if _is_branch(_with_prefix(state, NET)):
            result = WeightsFile(path, "control", branches={None: take(NET)}, branch_logvar=take(LOGVAR, LOGVAR))
        else:
            result = WeightsFile(path, "net", base={**take(NET, NET), **take(LOGVAR, LOGVAR)})
    elif any(k.startswith(_NET_TOP_LEVEL) or k in net_keys for k in keys):
        logvar = take(LOGVAR, LOGVAR)
        bare = {k: v for k, v in state.items() if not k.startswith(LOGVAR)}  # a network's keys, unprefixed
        used.update(bare)
        if _is_branch(bare):
            result = WeightsFile(path, "bare", branches={None: bare}, branch_logvar=logvar)
        else:
            result = WeightsFile(path, "bare", base={**{NET + k: v for k, v in bare.items()}, **logvar})
    else:
        raise _unknown(path, state, "")
    result.left_out = sorted(set(state) - used)
    return result


def _unknown(path: str, state: dict, why: str) -> files.WeightsFileError:
    expected = "\n".join(f"  {name}: {text}" for name, text in LAYOUTS.items())
    return files.WeightsFileError(
        f"{path}: not a layout of NVIDIA's Cosmos-Transfer1 / Cosmos-1.0 weight files nor ours (nor a Cosmos-2.5 "
        "network)"
        f"{': ' + why if why else ''}; "
        f"its first keys are {list(state)[:8]}. Expected one of:\n{expected}"
    )


def read_control(path: str, use_ema: bool = False) -> WeightsFile:
    """A file that must hold one control branch (an official `<key>_control.pt`, a base+control file, ...)."""
    weights = read_weights(path, use_ema)
    if weights.official_branch is None and len(weights.branches) != 1:
        what = "the base only" if weights.has_base and not weights.branches else f"branches {sorted(weights.branches)}"
        raise files.WeightsFileError(
            f"{path} was given as a control-branch file, but it holds {what} ({LAYOUTS[weights.layout]}). A control "
            "file is an official <key>_control.pt (net.* with x_embedder2); give a base file as the base checkpoint"
        )
    return weights


def branch_of(weights: WeightsFile, hint_key: str) -> dict[str, torch.Tensor]:
    """Our `net_ctrl.<hint_key>.*` (+ the branch's `logvar.*`) from a file read by read_control."""
    if weights.official_branch is not None:
        branch, logvar = weights.official_branch, weights.branch_logvar
    else:
        (branch,) = weights.branches.values()
        logvar = {k: v for k, v in weights.base.items() if k.startswith(LOGVAR)}
    return {**logvar, **{f"{CONTROL}{hint_key}.{name}": value for name, value in branch.items()}}


# --------------------------------------------------------------------------------------------- building our weights
def branch_from_base(state: dict[str, torch.Tensor], hint_keys: Sequence[str], num_control_blocks: int,
                     clone: bool = True) -> dict[str, torch.Tensor]:
    """New branches initialized from base weights, as NVIDIA starts a branch (training/models/model_ctrl.py
    build_model: the control net loads the base's state dict non-strictly): for each hint key, `net_ctrl.K.X` =
    `net.X` for every X the branch shares with the base (embedders, blocks 0..num_control_blocks-1, final layer,
    norms). The branch's own layers (x_embedder2, input_hint_block, zero_blocks) are absent: they keep their
    initialization (checkpoint.allowed_missing_keys=NEW_BRANCH_KEY_PATTERNS of networks/dit_ctrl.py)."""
    shared = {}
    for key, value in state.items():
        if not key.startswith(NET):
            continue
        name = key[len(NET):]
        match = re.match(r"blocks\.block(\d+)\.", name)
        if match and int(match.group(1)) >= num_control_blocks:
            continue
        for hint_key in hint_keys:
            # Files written from it may not share storage; loading into a model reads the base's tensors as they are.
            shared[f"{CONTROL}{hint_key}.{name}"] = value.clone() if clone else value
    if not shared:
        raise files.WeightsFileError(f"no base weights ('net.*') to start a control branch from; first keys: "
                                     f"{list(state)[:5]}")
    return shared


def base_block_count(state: dict[str, torch.Tensor]) -> int:
    """The number of transformer blocks of the base in our weights (`net.blocks.block<i>.*`)."""
    return len({m.group(1) for k in state if (m := re.match(r"net\.blocks\.block(\d+)\.", k))})


def control_model_weights(
    base: WeightsFile,
    controls: dict[str, WeightsFile] | None = None,
    new_branches: Sequence[str] = (),
    num_control_blocks: int = 3,
    hint_key: str | None = None,
) -> dict[str, torch.Tensor]:
    """Our (control) model weights from a base file, control files (hint key -> read_control result) and new
    branches started from the base. hint_key names the branch inside `base` when it holds one (base+control)."""
    if not base.has_base:
        raise files.WeightsFileError(
            f"{base.path} holds only a control branch ({LAYOUTS[base.layout]}), but a base model is needed here: give "
            f"NVIDIA's {BASE_FILE} as the base and this file as a control (--control KEY={base.path})"
        )
    if base.official_branch is not None and hint_key is None:
        raise files.WeightsFileError(f"{base.path} also holds a control branch ({LAYOUTS[base.layout]}); name its "
                                     "hint key (--control-key KEY)")
    weights = base.ours(hint_key)
    overlap = set(new_branches) & set(controls or {})
    if overlap:
        raise files.WeightsFileError(f"hint keys {sorted(overlap)} given both as control files (--control) and as "
                                     "new branches (--new-control): give each key once")
    for key, control in (controls or {}).items():
        weights.update(branch_of(control, key))  # its logvar.* replaces the base's (the control model's head)
    if new_branches:
        blocks = base_block_count(weights)
        if not 1 <= num_control_blocks <= blocks:  # a branch copies its blocks from the base's first ones
            raise files.WeightsFileError(
                f"--num-control-blocks {num_control_blocks}: a new branch starts from the base's first blocks, and "
                f"the base in {base.path} has {blocks}: give a number from 1 to {blocks} (NVIDIA's Transfer1-7B "
                "branches have 3; net_ctrl.num_control_blocks of the experiment must match)")
        weights.update(branch_from_base(weights, list(new_branches), num_control_blocks))
    return weights


# ------------------------------------------------------------------------------------------------------- writing
@dataclass
class OfficialFiles:
    """Files in NVIDIA's layouts (file name -> state dict) and what of our weights they leave out."""

    files: dict[str, dict[str, torch.Tensor]]
    left_out: list[str]


def to_official(state: dict[str, torch.Tensor], hint_keys: Sequence[str] | None = None,
                finetune_base: bool = False) -> OfficialFiles:
    """Our weights -> NVIDIA's files: `<key>_control.pt` per branch (net.* = the branch, logvar.*), and
    `base_model.pt` (base_model.net.*, base_model.logvar.*) for a model without branches or, with
    `finetune_base`, one whose base was trained (a frozen base is NVIDIA's base_model.pt unchanged: left out).

    hint_keys: the branches to write (default: all)."""
    branches = sorted({k.split(".")[1] for k in state if k.startswith(CONTROL)})
    keys = list(branches if hint_keys is None else hint_keys)
    unknown = sorted(set(keys) - set(branches))
    if unknown:
        raise files.WeightsFileError(f"no branch {unknown} in the weights; its branches: {branches}")
    logvar = {k: v for k, v in state.items() if k.startswith(LOGVAR)}
    base = {k: v for k, v in state.items() if k.startswith(NET)}
    if not base and not branches:
        raise files.WeightsFileError(f"no 'net.*' or 'net_ctrl.*' weights; first keys: {list(state)[:5]}")
    out: dict[str, dict[str, torch.Tensor]] = {}
    used: set[str] = set()
    for key in keys:
        prefix = f"{CONTROL}{key}."
        branch = {NET + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        used.update(prefix + k[len(NET):] for k in branch)
        out[f"{key}_control.pt"] = {**branch, **logvar}
        used.update(logvar)
    if base and (finetune_base or not branches):
        out[BASE_FILE] = {OFFICIAL_BASE + k: v for k, v in {**base, **logvar}.items()}
        used.update(base)
        used.update(logvar)
    return OfficialFiles(out, sorted(set(state) - used))


def base_was_trained(path: str) -> tuple[bool | None, str]:
    """Whether the job that made weights file `path` trained its base (model.finetune_base), and where that was
    read: the metadata scripts/export_checkpoint.py writes (`finetune_base`, or else `source`, the checkpoint, whose
    job folder holds config.yaml). (None, why) when the file does not say (not an export of ours)."""
    if not path.endswith(".safetensors"):
        return None, f"{path} is no export of ours"
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("finetune_base") in ("true", "false"):
        return metadata["finetune_base"] == "true", f"model.finetune_base={metadata['finetune_base']} in its metadata"
    return job_finetune_base(metadata["source"]) if "source" in metadata else (None, f"{path} names no job")


def job_finetune_base(checkpoint: str) -> tuple[bool | None, str]:
    """model.finetune_base in the config.yaml of the job whose checkpoint (iter_* or checkpoints/ folder) this is."""
    import yaml

    for job in (os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), os.path.dirname(checkpoint)):
        config = os.path.join(job, "config.yaml")
        if os.path.isfile(config):
            try:
                with open(config, encoding="utf-8") as file:
                    content = yaml.safe_load(file)
            except (yaml.YAMLError, UnicodeDecodeError):
                return None, f"{config} is not readable YAML"
            model = content.get("model") if isinstance(content, dict) else None
            value = model.get("finetune_base") if isinstance(model, dict) else None
            return (value if isinstance(value, bool) else None), f"model.finetune_base={value} in {config}"
    return None, f"no config.yaml in the job folder of {checkpoint}"
