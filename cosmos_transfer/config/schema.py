"""The training config's schema: attrs classes with typed, validated fields, and the Hydra defaults list.

A `Config` holds the job, trainer and checkpoint settings as attrs objects (`JobConfig`, `TrainerConfig`,
`CheckpointConfig`), and every buildable component (model, optimizer, scheduler, EMA, data loaders) as a LazyDict
(config/lazy.py). Validators run whenever a field is set, so a bad value is refused with a ConfigError naming the
key a user would override (`trainer.max_iter`). Composing a Config with overrides is config/compose.py's job;
`configs/train.py: make_config()` returns the default one. See docs/CONFIG.md.
"""

import math
import os
from typing import Any, Dict, List, Optional

import attrs

from cosmos_transfer.config.errors import ConfigError, FrozenConfigError
from cosmos_transfer.config.lazy import PLACEHOLDER
from cosmos_transfer.dtypes import DTYPE_NAMES

__all__ = ["JobConfig", "TrainerConfig", "CheckpointConfig", "Config", "DEFAULTS", "SECTIONS", "COMPONENTS"]


_SECTION_NAMES = {"JobConfig": "job", "TrainerConfig": "trainer", "CheckpointConfig": "checkpoint"}


def _label(instance: Any, attribute: "attrs.Attribute") -> str:
    """'trainer.max_iter': the key a user would override."""
    section = _SECTION_NAMES.get(type(instance).__name__)
    return f"{section}.{attribute.name}" if section else f"{type(instance).__name__}.{attribute.name}"


def _refuse_when_frozen(instance: Any, attribute: "attrs.Attribute", value: Any) -> Any:
    if getattr(instance, "_frozen", False):
        raise FrozenConfigError(f"{_label(instance, attribute)} cannot be changed: the config is frozen "
                                "for training (change it before composing, or with a command-line override)")
    return value


def _one_of(*choices: str):
    def check(instance: Any, attribute: "attrs.Attribute", value: Any) -> None:
        if value not in choices:
            raise ConfigError(f"{_label(instance, attribute)} is {value!r}; expected one of {list(choices)}")

    return check


def _at_least(minimum: float):
    def check(instance: Any, attribute: "attrs.Attribute", value: Any) -> None:
        if value is not None and value < minimum:
            raise ConfigError(f"{_label(instance, attribute)} is {value!r}; expected a value >= {minimum}")

    return check


def _finite(instance: Any, attribute: "attrs.Attribute", value: Any) -> None:
    # NaN passes every comparison check silently (`nan < 0` is False): clip_grad_norm=nan turned clipping off.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{_label(instance, attribute)} is {value!r}; expected a finite number")


def _finite_values(instance: Any, attribute: "attrs.Attribute", value: Any) -> None:
    for key, number in dict(value or {}).items():
        if isinstance(number, float) and not math.isfinite(number):
            raise ConfigError(f"{_label(instance, attribute)}[{key!r}] is {number!r}; expected a finite number")


def _folder_name(instance: Any, attribute: "attrs.Attribute", value: Any) -> None:
    if not isinstance(value, str) or value in ("", ".", "..") or any(c in value for c in ("/", "\\", "\0")):
        raise ConfigError(
            f"{_label(instance, attribute)} is {value!r}; expected a single folder name (not empty, not '.' or '..', "
            "no '/' or '\\'): the job folder is $OUTPUT_ROOT/{project}/{group}/{name} and must stay inside OUTPUT_ROOT"
        )


def _dtype_name(instance: Any, attribute: "attrs.Attribute", value: Any) -> None:
    if value is not None and value not in DTYPE_NAMES:
        raise ConfigError(f"{_label(instance, attribute)} is {value!r}; expected one of {[None, *DTYPE_NAMES]}")


def _config_class(cls: type) -> type:
    """attrs class with slots=False (OmegaConf reads it) whose fields refuse changes once frozen."""
    return attrs.define(slots=False, on_setattr=[attrs.setters.validate, _refuse_when_frozen])(cls)


@_config_class
class JobConfig:
    """Who this run is. Outputs go to `$OUTPUT_ROOT/{project}/{group}/{name}` (OUTPUT_ROOT defaults to ./outputs)."""

    project: str = attrs.field(default="cosmos_transfer", validator=_folder_name)
    group: str = attrs.field(default="debug", validator=_folder_name)
    name: str = attrs.field(default="default", validator=_folder_name)

    @property
    def path(self) -> str:
        """The job directory (config.yaml, checkpoints/, metrics.jsonl, tensorboard/, samples/)."""
        return os.path.join(os.environ.get("OUTPUT_ROOT", "./outputs"), self.project, self.group, self.name)


@_config_class
class TrainerConfig:
    """The training loop, parallelism and logging settings (read by cosmos_transfer/trainer/trainer.py)."""

    max_iter: int = attrs.field(default=1000, validator=_at_least(0))
    logging_iter: int = attrs.field(default=10, validator=_at_least(1))
    # Validation (and sample videos) every validation_iter steps; 0 disables it.
    validation_iter: int = attrs.field(default=0, validator=_at_least(0))
    validation_num_batches: int = attrs.field(default=1, validator=_at_least(1))
    validation_samples: bool = True
    sample_num_steps: int = attrs.field(default=35, validator=_at_least(1))
    sample_guidance: float = attrs.field(default=0.0, validator=_finite)
    seed: int = 0
    grad_accum_iter: int = attrs.field(default=1, validator=_at_least(1))
    # Gradient-norm clipping; 0 disables clipping (the norm is still logged).
    clip_grad_norm: float = attrs.field(default=1.0, validator=[_finite, _at_least(0)])
    # Parameter-name pattern (fnmatch) -> learning-rate multiplier; first match wins (trainer/param_groups.py).
    # `trainer.lr_multipliers={...}` on the command line replaces the dict (config/compose.py).
    lr_multipliers: Dict[str, float] = attrs.field(factory=dict, validator=_finite_values)
    # Steps with a non-finite loss or gradient are skipped; this many in a row stop the run.
    max_nan_steps: int = attrs.field(default=10, validator=_at_least(1))
    # Callback name -> LazyDict (group `callbacks`).
    callbacks: Dict[str, Any] = attrs.field(factory=dict)
    compile: bool = False
    activation_checkpointing: str = attrs.field(default="none", validator=_one_of("none", "full", "selective"))
    # FSDP2: shard over groups of this many ranks, replicate across groups (HSDP); 0 shards over all ranks.
    fsdp_shard_size: int = attrs.field(default=0, validator=_at_least(0))
    # Context parallelism: each sample's token frames split over groups of this many ranks (Ulysses attention,
    # trainer/context_parallel.py); 1 is none. It divides the ranks; the groups are the data-parallel ranks.
    context_parallel_size: int = attrs.field(default=1, validator=_at_least(1))
    # Mixed precision of the sharded parameters / gradient reduction; None picks bfloat16 on CUDA, float32 on CPU.
    param_dtype: Optional[str] = attrs.field(default=None, validator=_dtype_name)
    reduce_dtype: Optional[str] = attrs.field(default="float32", validator=_dtype_name)
    # Collective timeout (seconds) for the process group.
    timeout_s: float = attrs.field(default=1800.0, validator=[_finite, _at_least(1)])
    tensorboard: bool = True
    wandb_project: Optional[str] = None
    progress_bar: bool = True
    # Peak dense TFLOP/s of one device, for MFU; None looks it up from the device name.
    peak_tflops: Optional[float] = attrs.field(default=None, validator=_finite)


@_config_class
class CheckpointConfig:
    """Saving and loading. Rerunning the same job resumes from its latest checkpoint; load_path starts a fine-tune."""

    save_iter: int = attrs.field(default=1000, validator=_at_least(0))
    # Initial weights when the job has no checkpoint yet: a converted/official checkpoint or another job's iter dir.
    load_path: str = ""
    strict_load: bool = True
    # Key patterns that may be missing from load_path (e.g. new control branches), used when strict_load is True.
    allowed_missing_keys: List[str] = attrs.field(factory=list)
    load_ema: bool = False
    keep_last_k: int = attrs.field(default=3, validator=_at_least(1))
    async_save: bool = False


# The Hydra defaults list. Order matters: each entry is merged over the previous ones, and `_self_` is where this
# Config's own values go. `_self_` first: group options override the Config's defaults; `experiment` last: an
# experiment overrides everything (its own `defaults` can switch group options with {"override /net": ...}).
DEFAULTS: List[Any] = [
    "_self_",
    {"data_train": "demo"},
    {"data_val": "demo"},
    {"optimizer": "adamw"},
    {"scheduler": "lambdalinear"},
    {"callbacks": "basic"},
    {"model": "diffusion"},
    {"net": "tiny"},
    {"net_ctrl": None},
    {"hint_key": None},
    {"conditioner": "video"},
    {"tokenizer": "pixel"},
    {"ema": "power"},
    {"lora": None},
    {"checkpoint": "local"},
    {"experiment": None},
]


@_config_class
class Config:
    """Everything a training run needs. Components are LazyDicts (None until a group option or experiment sets them)."""

    model: Any = PLACEHOLDER
    optimizer: Any = PLACEHOLDER
    scheduler: Any = PLACEHOLDER
    # The weight average (group `ema`), built by the trainer around the parallelized model: `instantiate(ema,
    # model=model)`; None (`ema=null`) trains without one.
    ema: Any = PLACEHOLDER
    # LoRA adapters (group `lora`, cosmos_transfer/lora.py), added by the trainer before sharding; None: no LoRA.
    lora: Any = PLACEHOLDER
    dataloader_train: Any = PLACEHOLDER
    dataloader_val: Any = PLACEHOLDER
    job: JobConfig = attrs.field(factory=JobConfig)
    trainer: TrainerConfig = attrs.field(factory=TrainerConfig)
    checkpoint: CheckpointConfig = attrs.field(factory=CheckpointConfig)
    defaults: List[Any] = attrs.field(factory=lambda: [dict(d) if isinstance(d, dict) else d for d in DEFAULTS])


# The attrs sections and the LazyDict components of a Config, by attribute name.
SECTIONS = {"job": JobConfig, "trainer": TrainerConfig, "checkpoint": CheckpointConfig}
COMPONENTS = ("model", "optimizer", "scheduler", "ema", "lora", "dataloader_train", "dataloader_val")
