"""The training config: attrs classes, Hydra composition (`override`), freezing.

A `Config` holds the job, trainer and checkpoint settings as attrs objects, and every buildable component (model,
optimizer, scheduler, data loaders) as a LazyDict (see lazy_config.py). `configs/train.py: make_config()` returns
the default `Config` and registers the option groups; `override(config, ["--", "experiment=NAME", "k=v"])` composes
it with Hydra, resolves interpolations, rebuilds the attrs objects (type-checked) and returns a new `Config`.
See docs/CONFIG.md.
"""

import difflib
import math
import os
import re
from typing import Any, Dict, List, Optional

import attrs
from omegaconf import DictConfig, ListConfig, OmegaConf

from cosmos_transfer.lazy_config import PLACEHOLDER

__all__ = [
    "JobConfig",
    "TrainerConfig",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "override",
    "freeze",
    "to_yaml",
    "from_yaml",
    "load_make_config",
    "DEFAULTS",
]


class ConfigError(ValueError):
    """A bad config input (unknown key, wrong type, unknown experiment, ...); the message says what and how to fix."""


class FrozenConfigError(AttributeError):
    """Raised when code changes a config after it was frozen for training."""


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


_DTYPES = (None, "float32", "bfloat16", "float16")


def _dtype_name(instance: Any, attribute: "attrs.Attribute", value: Any) -> None:
    if value not in _DTYPES:
        raise ConfigError(f"{_label(instance, attribute)} is {value!r}; expected one of {list(_DTYPES)}")


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
    lr_multipliers: Dict[str, float] = attrs.field(factory=dict, validator=_finite_values)
    # Steps with a non-finite loss or gradient are skipped; this many in a row stop the run.
    max_nan_steps: int = attrs.field(default=10, validator=_at_least(1))
    # Callback name -> LazyDict (group `callbacks`).
    callbacks: Dict[str, Any] = attrs.field(factory=dict)
    compile: bool = False
    activation_checkpointing: str = attrs.field(default="none", validator=_one_of("none", "full", "selective"))
    # FSDP2: shard over groups of this many ranks, replicate across groups (HSDP); 0 shards over all ranks.
    fsdp_shard_size: int = attrs.field(default=0, validator=_at_least(0))
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
    {"checkpoint": "local"},
    {"experiment": None},
]


@_config_class
class Config:
    """Everything a training run needs. Components are LazyDicts (None until a group option or experiment sets them)."""

    model: Any = PLACEHOLDER
    optimizer: Any = PLACEHOLDER
    scheduler: Any = PLACEHOLDER
    dataloader_train: Any = PLACEHOLDER
    dataloader_val: Any = PLACEHOLDER
    job: JobConfig = attrs.field(factory=JobConfig)
    trainer: TrainerConfig = attrs.field(factory=TrainerConfig)
    checkpoint: CheckpointConfig = attrs.field(factory=CheckpointConfig)
    defaults: List[Any] = attrs.field(factory=lambda: [dict(d) if isinstance(d, dict) else d for d in DEFAULTS])


_SECTIONS = {"job": JobConfig, "trainer": TrainerConfig, "checkpoint": CheckpointConfig}
_COMPONENTS = ("model", "optimizer", "scheduler", "dataloader_train", "dataloader_val")


# ----------------------------------------------------------------------------------------------------------------------
# Freezing and printing
# ----------------------------------------------------------------------------------------------------------------------


def freeze(config: Config) -> Config:
    """Make a composed config read-only (attrs fields and LazyDicts); returns the same object."""
    for name in _COMPONENTS:
        value = getattr(config, name)
        if isinstance(value, (DictConfig, ListConfig)):
            OmegaConf.set_readonly(value, True)
    for name in _SECTIONS:
        section = getattr(config, name)
        if isinstance(section.__dict__.get("callbacks"), (DictConfig, ListConfig)):
            OmegaConf.set_readonly(section.callbacks, True)
        object.__setattr__(section, "_frozen", True)
    object.__setattr__(config, "_frozen", True)
    return config


def is_frozen(config: Config) -> bool:
    return bool(getattr(config, "_frozen", False))


def to_plain_dict(config: Config) -> dict:
    """The config as plain Python containers (interpolations resolved), without the Hydra defaults list."""
    out: dict[str, Any] = {}
    for name in _COMPONENTS:
        value = getattr(config, name)
        out[name] = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    for name in _SECTIONS:
        section = attrs.asdict(getattr(config, name), recurse=False)
        out[name] = {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v
                     for k, v in section.items()}
    return out


def to_yaml(config: Config) -> str:
    """The resolved config as YAML (what `--dryrun` prints and `<job dir>/config.yaml` holds)."""
    return OmegaConf.to_yaml(OmegaConf.create(to_plain_dict(config), flags={"allow_objects": True}))


def from_yaml(path: str) -> Config:
    """Read back a `config.yaml` written by scripts/train.py (e.g. to run inference with a job's config)."""
    try:
        loaded = OmegaConf.load(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"Cannot read config file '{path}': {error}") from error
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"Config file '{path}' does not hold a mapping (expected a config.yaml from a job folder)")
    unknown = sorted(set(loaded.keys()) - set(_COMPONENTS) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"Config file '{path}' has unknown top-level keys {unknown}; expected "
                          f"{list(_COMPONENTS) + list(_SECTIONS)}")
    for name in _SECTIONS:
        if name not in loaded:
            loaded[name] = {}
    return _rebuild(Config(), loaded)


def load_make_config(path: str) -> Any:
    """The `make_config` function of a config entry file (`--config=PATH`); ConfigError naming the file otherwise."""
    import importlib.util
    import traceback

    if not os.path.isfile(path):
        raise ConfigError(f"--config file '{path}' does not exist (expected a Python file defining make_config(), "
                          f"e.g. --config=configs/train.py)")
    if not path.endswith(".py"):
        raise ConfigError(f"--config file '{path}' is not a Python file (expected a .py file defining make_config())")
    spec = importlib.util.spec_from_file_location("cosmos_transfer_config_entry", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of a user's config file is reported the same way
        if isinstance(error, SyntaxError) and error.lineno:
            where = f" (line {error.lineno})"
        else:
            frames = [f for f in traceback.extract_tb(error.__traceback__)
                      if os.path.abspath(f.filename) == os.path.abspath(path)]
            where = f" (line {frames[-1].lineno})" if frames else ""
        raise ConfigError(f"--config file '{path}' failed to import{where}: {type(error).__name__}: {error}") from error
    make_config = getattr(module, "make_config", None)
    if not callable(make_config):
        raise ConfigError(f"--config file '{path}' defines no make_config() function (it must return a Config)")
    return make_config


# ----------------------------------------------------------------------------------------------------------------------
# Composition
# ----------------------------------------------------------------------------------------------------------------------

_PRIMARY_NAME = "cosmos_transfer_config"


def _strip_separator(overrides: List[str]) -> List[str]:
    overrides = list(overrides)
    if overrides and overrides[0] == "--":
        overrides = overrides[1:]
    return overrides


def _requested_experiment(overrides: List[str]) -> Optional[str]:
    """The value of `experiment=NAME` (also `+experiment=`, `++experiment=`), or None."""
    name = None
    for item in overrides:
        match = re.fullmatch(r"\+{0,2}experiment=(.*)", item.strip())
        if match:
            name = match.group(1).strip().strip("'\"")
    return None if name in (None, "", "null", "None") else name


def _dotted_keys(node: Any, prefix: str = "") -> List[str]:
    keys: List[str] = []
    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing():
            return keys
        for key in node.keys():
            path = f"{prefix}.{key}" if prefix else str(key)
            keys.append(path)
            try:
                child = node._get_node(key)
            except Exception:  # noqa: BLE001 - best-effort listing for suggestions only
                continue
            keys.extend(_dotted_keys(child, path))
    return keys


def _suggest(word: str, candidates: List[str], count: int = 3) -> str:
    close = difflib.get_close_matches(word, candidates, n=count, cutoff=0.6)
    if not close:  # try the last component against the last components of candidates
        last = word.split(".")[-1]
        by_last: dict[str, str] = {}
        for candidate in candidates:
            by_last.setdefault(candidate.split(".")[-1], candidate)
        close = [by_last[c] for c in difflib.get_close_matches(last, list(by_last), n=count, cutoff=0.6)]
    return ", ".join(close)


def _compose(overrides: List[str]) -> DictConfig:
    from hydra import compose, initialize

    with initialize(version_base=None):
        return compose(config_name=_PRIMARY_NAME, overrides=overrides)


def _explain_composition_error(error: Exception, overrides: List[str]) -> str:
    """Turn a Hydra/OmegaConf error into one paragraph naming the bad override and what was expected."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    causes = []
    current: Optional[BaseException] = error
    while current is not None and len(causes) < 8:
        causes.append(current)
        current = current.__cause__ or current.__context__
    text = "\n".join(str(c) for c in causes)

    key_error = next((c for c in causes if isinstance(c, (ConfigKeyError, ConfigAttributeError))), None)
    if key_error is not None or "not in struct" in text:
        full_key = getattr(key_error, "full_key", None) or ""
        if not full_key:
            match = re.search(r"Could not override '([^']+)'", text) or re.search(r"full_key: (\S+)", text)
            full_key = match.group(1) if match else "?"
        known = _known_keys(overrides)
        hint = _suggest(full_key, known)
        suggestion = f" Did you mean: {hint}?" if hint else ""
        value = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=", 1)[0] == full_key), None)
        add = f" To add a new key use '+{full_key}={value}'." if value is not None else ""
        return f"Unknown config key '{full_key}'.{suggestion}{add}"

    validation = next((c for c in causes if isinstance(c, ValidationError)), None)
    if validation is not None:
        full_key = getattr(validation, "full_key", "") or "?"
        value = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=", 1)[0] == full_key), None)
        expected = _field_type_name(full_key)
        return (f"Wrong type for '{full_key}'" + (f": got {value!r}" if value is not None else "") +
                (f", expected {expected}" if expected else "") + f" ({str(validation).splitlines()[0]}).")

    missing = next((c for c in causes if isinstance(c, MissingConfigException)), None)
    if missing is not None or "Could not find" in text:
        match = re.search(r"Could not find '([^']+)'", text)
        what = match.group(1) if match else str(missing)
        group, _, option = what.rpartition("/")
        options = _group_options(group) if group else []
        hint = _suggest(option, options)
        return (f"Unknown option '{option}' for config group '{group}'." +
                (f" Did you mean: {hint}?" if hint else "") +
                (f" Available: {', '.join(options)}." if options else f" Known groups: {', '.join(_groups())}."))

    first = str(error).strip().splitlines()
    return "Could not compose the config: " + " ".join(line.strip() for line in first if line.strip())


def _field_type_name(full_key: str) -> str:
    """'trainer.max_iter' -> 'int': the declared type of an attrs field of Config, or '' if not an attrs field."""
    cls: Any = Config
    field_type: Any = None
    for part in full_key.split("."):
        if not (isinstance(cls, type) and attrs.has(cls)):
            return ""
        fields = attrs.fields_dict(cls)
        if part not in fields:
            return ""
        field_type = fields[part].type
        cls = field_type
    if field_type is None:
        return ""
    if getattr(field_type, "__origin__", None) is not None:  # List[str], Optional[float], ...
        return str(field_type).replace("typing.", "")
    return getattr(field_type, "__name__", None) or str(field_type)


def _groups() -> List[str]:
    from hydra.core.config_store import ConfigStore

    repo = ConfigStore.instance().repo
    return sorted(k for k, v in repo.items() if isinstance(v, dict))


def _group_options(group: str) -> List[str]:
    from hydra.core.config_store import ConfigStore

    node: Any = ConfigStore.instance().repo
    for part in group.strip("/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return []
        node = node[part]
    return sorted(name[: -len(".yaml")] for name in node if name.endswith(".yaml"))


def _known_keys(overrides: List[str]) -> List[str]:
    """All dotted keys of the config composed with only the group choices of `overrides` (for suggestions)."""
    group_choices = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0]]
    for attempt in (group_choices, []):
        try:
            return _dotted_keys(_compose(attempt))
        except Exception:  # noqa: BLE001 - suggestions are best effort
            continue
    return []


def _register_primary(config: Config) -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=_PRIMARY_NAME, node=config)


def _check_finite_numbers(value: Any, key: str) -> None:
    """No NaN or infinity anywhere in a component (optimizer.lr, optimizer.weight_decay, scheduler.f_start, ...)."""
    if isinstance(value, dict):
        for child_key, child in value.items():
            _check_finite_numbers(child, f"{key}.{child_key}")
    elif isinstance(value, (list, tuple)):
        for index, child in enumerate(value):
            _check_finite_numbers(child, f"{key}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} is {value!r}; expected a finite number (a NaN or infinite value in a component "
                          "trains garbage or fails far from the override)")


def _rebuild(config: Config, composed: DictConfig) -> Config:
    """attrs objects from the composed (resolved) DictConfig; attrs validators run here."""
    values: dict[str, Any] = {}
    for name in _COMPONENTS:
        node = composed.get(name)
        if isinstance(node, (DictConfig, ListConfig)):
            container = OmegaConf.to_container(node, resolve=True)
            _check_finite_numbers(container, name)
            node = OmegaConf.create(container, flags={"allow_objects": True})
        values[name] = node
    for name, cls in _SECTIONS.items():
        section = OmegaConf.to_container(composed[name], resolve=True)
        if name == "trainer":
            callbacks = section.get("callbacks") or {}
            section["callbacks"] = OmegaConf.create(callbacks, flags={"allow_objects": True})
        try:
            values[name] = cls(**section)
        except ConfigError:
            raise
        except TypeError as error:
            raise ConfigError(f"Bad '{name}' section: {error}") from error
    values["defaults"] = list(config.defaults)
    return Config(**values)


def override(config: Config, overrides: List[str]) -> Config:
    """Compose `config` with Hydra overrides (`["--", "experiment=NAME", "trainer.max_iter=7", ...]`).

    Only the experiment file that defines NAME is imported (see cosmos_transfer/experiments.py). Interpolations are
    resolved, and the attrs sections are rebuilt (type-checked). Raises ConfigError with a one-paragraph message for
    an unknown key, a wrong type, an unknown group option or experiment.
    """
    from hydra.core.global_hydra import GlobalHydra

    overrides = _strip_separator(overrides)
    # `experiment=null` means no experiment (the default); Hydra would read it as an unknown key.
    overrides = [o for o in overrides if not re.fullmatch(r"\+{0,2}experiment=(null|None|)", o.strip())]
    name = _requested_experiment(overrides)
    if name is not None:
        from cosmos_transfer import experiments

        experiments.load_experiment(name)
    _register_primary(config)
    GlobalHydra.instance().clear()
    try:
        composed = _compose(overrides)
    except Exception as error:  # noqa: BLE001 - Hydra raises many types; all become one clear message
        raise ConfigError(_explain_composition_error(error, overrides)) from error
    finally:
        GlobalHydra.instance().clear()
    try:
        OmegaConf.resolve(composed)
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"Could not resolve an interpolation in the config: {error}") from error
    return _rebuild(config, composed)
