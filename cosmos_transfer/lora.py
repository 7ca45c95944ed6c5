"""LoRA adapters on the networks of a model, through `peft` (the `lora` extra): configured, applied, merged.

    lora = LoRA(rank=32, alpha=32, target_modules=BASE_TARGETS)   # config: the `lora` group (configs/lora.py)
    lora.apply(model)        # the trainer, after building the model and before sharding it (trainer/parallelize.py)

`target_modules` are regular expressions, each matched (re.fullmatch) against the names of the model's nn.Linear
modules (`net.blocks.3.self_attn.q_proj`); a pattern that matches none is a configuration error naming it. peft
wraps each matched layer: its weight becomes `<layer>.base_layer.weight` and the adapter `<layer>.lora_A.default.weight`
(A: [rank, in], random) and `<layer>.lora_B.default.weight` (B: [out, rank], zero), so the adapted model starts equal
to the base and computes `W x + (alpha / rank) B A x`. Every parameter of a network that holds an adapter is frozen,
except the adapters and what the `trainable` patterns name (a control branch's own zero-initialized layers, which
must train for its output to move; with adapters on the base, a Transfer2.5 control branch, which shares the network
`net`); parameters outside those networks (the `logvar` head) keep their setting.
Adapters are float32 whatever the frozen base's dtype (master weights for the optimizer; NVIDIA's Predict2.5 does
the same), and dropout is 0 by default, so a resumed run repeats an uninterrupted one bitwise.

Files: base weight files name layers without `.base_layer`; `base_name` / `base_view` translate, and
`merge_weights` folds the adapters into the base weights (an export that loads into a model without LoRA), while
`split_weights` + `save_adapters` keep them apart (a small adapter file, with rank, alpha and targets in its
metadata) and `merge_adapter_file` folds such a file into a built model for inference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cosmos_transfer.config.errors import ConfigError

if TYPE_CHECKING:  # torch is imported on use: configs/lora.py reads the patterns below at config start-up
    import torch
    from torch import nn

ADAPTER_NAME = "default"  # peft's adapter name; one adapter per model
_BASE_LAYER = ".base_layer"
_A = f".lora_A.{ADAPTER_NAME}.weight"
_B = f".lora_B.{ADAPTER_NAME}.weight"

# Both families' names: Transfer1's GeneralDIT (`blocks.block0.blocks.0.block.attn.to_q.0`, `...blocks.2.block.layer1`)
# and Cosmos-2.5's (`blocks.0.self_attn.q_proj`, `blocks.0.cross_attn.output_proj`, `blocks.0.mlp.layer1`).
_ATTENTION = r"(to_q\.0|to_k\.0|to_v\.0|to_out\.0|q_proj|k_proj|v_proj|output_proj)"
_MLP = r"(block\.layer1|block\.layer2|mlp\.layer1|mlp\.layer2)"
# The base network's transformer blocks (not the 2.5 control blocks inside the same network).
_BASE_BLOCKS = r"net\.blocks\.[^.]+\.(.+\.)?"
# Control branches: Transfer1's `net_ctrl.<hint>.blocks...`, Transfer2.5's `net.control_blocks[_<b>].<i>...`.
_CONTROL_BLOCKS = r"(net_ctrl\.[^.]+\.blocks|net\.control_blocks[^.]*)\.[^.]+\.(.+\.)?"

# Cosmos-Predict2.5's recipe (rank 32, alpha 32 on q/k/v/output projections and the MLP layers), on the base...
BASE_TARGETS = (_BASE_BLOCKS + _ATTENTION, _BASE_BLOCKS + _MLP)
# ... and on the control branches, whose own (zero-initialized) layers stay trainable: Transfer1's hint embedder and
# zero projections (networks/dit_ctrl.py BRANCH_OWN_LAYERS), Transfer2.5's control embedder and before/after
# projections.
CONTROL_TARGETS = (_CONTROL_BLOCKS + _ATTENTION, _CONTROL_BLOCKS + _MLP)
CONTROL_TRAINABLE = (
    r"(net_ctrl\.[^.]+\.(x_embedder2|input_hint_block|zero_blocks)"
    r"|net\.(control_embedder[^.]*|control_blocks[^.]*\.[^.]+\.(before_proj|after_proj)))\..*",
)
# With adapters on the base, a Transfer2.5 model's control branch (inside the same network `net`) keeps training in
# full, as Transfer1's separate `net_ctrl` does.
BASE_TRAINABLE = (r"net\.control_(embedder|blocks)[^.]*\..*",)


class LoRA:
    """Which layers get adapters, of what rank and scale; `apply(model)` adds them (see the module docstring).

    Args:
        rank: r of the low-rank update (A: r x in, B: out x r).
        alpha: the update is scaled by alpha / rank.
        target_modules: regular expressions matched against the full names of the model's nn.Linear modules.
        trainable: regular expressions of parameter names (as before LoRA) that stay trainable, if they were, inside
            the adapted networks (a pattern may match nothing: e.g. a 2.5 control branch in a model without one).
        dropout: dropout on the adapters' input (0: none, and bitwise-reproducible resumes).
    """

    def __init__(
        self,
        rank: int = 32,
        alpha: float = 32.0,
        target_modules: Sequence[str] = BASE_TARGETS,
        trainable: Sequence[str] = (),
        dropout: float = 0.0,
    ) -> None:
        if isinstance(target_modules, str) or isinstance(trainable, str):
            raise ConfigError("lora.target_modules and lora.trainable must be lists of regular expressions, "
                              f"got {target_modules!r} / {trainable!r}")
        if int(rank) != rank or rank < 1:
            raise ConfigError(f"lora.rank must be a positive integer, got {rank!r}")
        if not alpha > 0:
            raise ConfigError(f"lora.alpha must be positive, got {alpha!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {dropout!r}")
        if not target_modules:
            raise ConfigError("lora.target_modules is empty: name the layers to adapt (regular expressions)")
        for pattern in [*target_modules, *trainable]:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ConfigError(f"lora: {pattern!r} is not a regular expression ({error})") from None
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.target_modules = [str(p) for p in target_modules]
        self.trainable = [str(p) for p in trainable]
        self.dropout = float(dropout)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def settings(self) -> dict[str, Any]:
        """Plain values saved with checkpoints and adapter files (what merging needs, and what was adapted)."""
        return {"rank": self.rank, "alpha": self.alpha, "target_modules": self.target_modules,
                "trainable": self.trainable, "dropout": self.dropout}

    def targets(self, model: nn.Module) -> list[str]:
        """Names of the nn.Linear modules of `model` the patterns match; a pattern matching none is an error."""
        from torch import nn

        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        matched: list[str] = []
        for pattern in self.target_modules:
            hits = [name for name in linears if re.fullmatch(pattern, name)]
            if not hits:
                examples = ", ".join(linears[:4] + (["..."] if len(linears) > 4 else []))
                raise ConfigError(
                    f"lora.target_modules: the pattern {pattern!r} matches no nn.Linear of {type(model).__name__} "
                    f"(its {len(linears)} linear layers are named like {examples}). Patterns are regular "
                    "expressions matched against the whole module name; fix or remove it."
                )
            matched += [name for name in hits if name not in matched]
        return matched

    def apply(self, model: nn.Module) -> str:
        """Add the adapters to `model` in place (before FSDP sharding); returns a line saying what was adapted."""
        import torch

        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as error:
            raise ConfigError(f"the `lora` config needs the peft package, which this Python cannot import "
                              f"({error}): install it with `.venv/bin/pip install -e '.[lora]'` (peft==0.21.2), or "
                              "train without LoRA (lora=null)") from None
        if any(_BASE_LAYER + "." in name for name, _ in model.named_parameters()):
            raise ValueError(f"lora: {type(model).__name__} already has LoRA adapters")
        targets = self.targets(model)
        before = {name: p.requires_grad for name, p in model.named_parameters()}
        kept = self._kept_trainable(before)
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                            init_lora_weights=True, bias="none")
        inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
        # peft froze everything but the adapters: restore our rule (see the module docstring).
        adapted_networks = {_network_of(name) for name in targets}
        for name, parameter in model.named_parameters():
            if is_adapter_key(name):
                if parameter.dtype != torch.float32:
                    parameter.data = parameter.data.float()
                parameter.requires_grad_(True)
                continue
            original = base_name(name)
            inside = _network_of(original) in adapted_networks
            parameter.requires_grad_(before[original] and (original in kept or not inside))
        adapters = sum(p.numel() for n, p in model.named_parameters() if is_adapter_key(n))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        return (f"LoRA rank {self.rank}, alpha {self.alpha:g} on {len(targets)} layers of "
                f"{sorted(adapted_networks)}: {adapters / 1e6:.2f}M adapter parameters; trainable "
                f"{trainable / 1e6:.2f}M of {total / 1e6:.2f}M")

    def _kept_trainable(self, parameters: Mapping[str, bool]) -> set[str]:
        return {name for name in parameters if any(re.fullmatch(pattern, name) for pattern in self.trainable)}


def _network_of(name: str) -> str:
    """The network a module or parameter belongs to: `net`, or `net_ctrl.<hint key>`."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "net_ctrl" else parts[0]


# ----------------------------------------------------------------------------------------------------------------------
# Names and weights


def is_adapter_key(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key


def base_name(key: str) -> str:
    """The name a weight has without LoRA (`...q_proj.base_layer.weight` -> `...q_proj.weight`)."""
    return key.replace(_BASE_LAYER + ".", ".")


def base_view(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(`state` under base names without the adapters, base name -> model name): how a base weight file (ours or
    NVIDIA's) lines up with a model that has adapters. The adapters keep their initialization."""
    view, model_names = {}, {}
    for key, value in state.items():
        if not is_adapter_key(key):
            view[base_name(key)] = value
            model_names[base_name(key)] = key
    return view, model_names


def has_adapters(keys: Iterable[str]) -> bool:
    return any(is_adapter_key(k) for k in keys)


def split_weights(weights: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(everything but the adapters, under base names; the adapters, under their model names)."""
    base = {base_name(k): v for k, v in weights.items() if not is_adapter_key(k)}
    adapters = {k: v for k, v in weights.items() if is_adapter_key(k)}
    return base, adapters


def _adapted_layers(adapters: Mapping[str, torch.Tensor], where: str) -> list[str]:
    from cosmos_transfer.checkpoints.files import WeightsFileError

    layers = sorted({k[: -len(_A)] for k in adapters if k.endswith(_A)})
    unknown = {k for k in adapters if not k.endswith((_A, _B))}
    unpaired = sorted(unknown | {k + _A for k in layers if k + _B not in adapters}
                      | {k for k in adapters if k.endswith(_B) and k[: -len(_B)] not in layers})
    if unpaired:
        raise WeightsFileError(f"{where}: adapter weights without their pair or of an unknown form: {unpaired[:4]}")
    return layers


def merged_weight(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float, *, layer: str = "a layer",
                  where: str = "adapters", rank: int | None = None) -> torch.Tensor:
    """W + scaling * B @ A, computed in float32 and returned in W's dtype. A must be [rank, in] and B [out, rank] for
    W [out, in] (a broadcast of other shapes would add a wrong update to every row or column); `layer`, `where`
    (the file) and `rank` (the file's setting) name the refusal."""
    from cosmos_transfer.checkpoints.files import WeightsFileError

    if weight.ndim != 2 or a.ndim != 2 or b.ndim != 2 or a.shape[1] != weight.shape[1] \
            or b.shape[0] != weight.shape[0] or b.shape[1] != a.shape[0] or (rank is not None and a.shape[0] != rank):
        out_features, in_features = (tuple(weight.shape) + (None, None))[:2]
        rank_name = "rank" if rank is None else str(rank)
        raise WeightsFileError(
            f"{where}: the adapters of {layer} do not fit it: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} "
            f"for its weight {tuple(weight.shape)} (out, in), which needs lora_A [{rank_name}, {in_features}] and "
            f"lora_B [{out_features}, {rank_name}]. They were made for another model (another size or experiment): "
            "use the adapters exported from a job of this model"
        )
    return (weight.float() + scaling * (b.float() @ a.float())).to(weight.dtype)


def merge_weights(weights: Mapping[str, torch.Tensor], scaling: float, where: str = "merge_weights"
                  ) -> dict[str, torch.Tensor]:
    """A LoRA model's weights with the adapters folded into their layers, under base names (loads into the model
    without LoRA and computes what the adapted model computes). `where` names the source in errors."""
    from cosmos_transfer.checkpoints.files import WeightsFileError

    base, adapters = split_weights(weights)
    for layer in _adapted_layers(adapters, where):
        key = layer + ".weight"
        if key not in base:
            raise WeightsFileError(f"{where}: adapters for {layer} but no {key}")
        base[key] = merged_weight(base[key], adapters[layer + _A], adapters[layer + _B], scaling, layer=layer,
                                  where=where)
    return base


def save_adapters(path: str, adapters: Mapping[str, torch.Tensor], settings: Mapping[str, Any]) -> None:
    """A safetensors file of the adapters, with the LoRA settings (rank, alpha, targets) in its metadata."""
    from safetensors.torch import save_file

    _adapted_layers(adapters, path)
    save_file({k: v.contiguous() for k, v in adapters.items()}, path, metadata={"lora": json.dumps(dict(settings))})


ADAPTER_FILE = "LoRA adapter file"
_REMAKE = "export it again with scripts/export_checkpoint.py --lora separate"


def adapter_scaling(settings: Any, where: str) -> float:
    """alpha / rank of saved LoRA settings (an adapter file's metadata, a checkpoint's `lora` settings), refusing
    settings without a positive integer rank and a positive finite alpha; `where` names the source."""
    from cosmos_transfer.checkpoints.files import WeightsFileError

    if not isinstance(settings, dict):
        raise WeightsFileError(f"{where}: the LoRA settings must be a JSON object with 'rank' and 'alpha', got "
                               f"{type(settings).__name__}; {_REMAKE}")
    missing = [name for name in ("rank", "alpha") if name not in settings]
    if missing:
        raise WeightsFileError(f"{where}: the LoRA settings lack {missing} (they have {sorted(settings)}); {_REMAKE}")
    rank, alpha = settings["rank"], settings["alpha"]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise WeightsFileError(f"{where}: the LoRA settings' rank must be a positive integer, got {rank!r}; {_REMAKE}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < float("inf"):
        raise WeightsFileError(f"{where}: the LoRA settings' alpha must be a positive finite number, got {alpha!r}; "
                               f"{_REMAKE}")
    return float(alpha) / rank


def read_adapters(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(adapter weights, LoRA settings) of a file written by save_adapters; a file that is damaged, is no adapter file,
    has unusable settings or holds NaN / inf is refused naming it."""
    from safetensors import safe_open

    from cosmos_transfer.checkpoints import files

    files.require_file(path, ADAPTER_FILE, _REMAKE)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as error:  # noqa: BLE001 - SafetensorError (header, size), OSError
        raise files.damaged(path, ADAPTER_FILE, error, _REMAKE) from None
    if "lora" not in metadata:
        raise files.WeightsFileError(f"{path} is not a LoRA adapter file (no 'lora' settings in its metadata; write "
                                     "it with scripts/export_checkpoint.py --lora separate)")
    try:
        settings = json.loads(metadata["lora"])
    except (ValueError, RecursionError) as error:
        raise files.WeightsFileError(f"{ADAPTER_FILE} {path}: its 'lora' metadata is not JSON ({error}); "
                                     f"{_REMAKE}") from None
    adapter_scaling(settings, f"{ADAPTER_FILE} {path}")
    files.check_finite(tensors, path, ADAPTER_FILE)
    return tensors, settings


def merge_adapter_file(model: nn.Module, path: str) -> list[str]:
    """Fold the adapters of `path` into the layers of a built model without LoRA (unsharded; for inference); returns
    the merged layers. Every adapter must name an nn.Linear of the model and have its shape."""
    import torch
    from torch import nn

    from cosmos_transfer.checkpoints.files import WeightsFileError

    adapters, settings = read_adapters(path)
    where = f"{ADAPTER_FILE} {path}"
    scaling = adapter_scaling(settings, where)
    layers = _adapted_layers(adapters, where)
    modules = dict(model.named_modules())
    for layer in layers:
        module = modules.get(layer)
        if not isinstance(module, nn.Linear):
            raise WeightsFileError(f"{where}: adapters for {layer}, which is not an nn.Linear of "
                                   f"{type(model).__name__}; use the adapters exported from a job of this model")
        with torch.no_grad():
            module.weight.copy_(merged_weight(module.weight, adapters[layer + _A], adapters[layer + _B], scaling,
                                              layer=layer, where=where, rank=settings["rank"]))
    return layers
