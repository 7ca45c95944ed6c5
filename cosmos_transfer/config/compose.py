"""Composing a Config: Hydra overrides, our one-paragraph error messages, freezing, YAML out and back in.

    config = override(make_config(), ["--", "experiment=NAME", "trainer.max_iter=7"])   # a new, validated Config
    freeze(config)                    # read-only from here on (scripts/train.py, before training)
    text = to_yaml(config)            # what --dryrun prints and <job dir>/config.yaml holds; from_yaml reads it back

`override` registers the Config as Hydra's primary config, imports the one experiment file that defines NAME
(config/experiments.py), composes with Hydra, resolves interpolations and rebuilds the attrs sections (their
validators run). Hydra's many error types become one ConfigError paragraph naming the bad override and what was
expected. `KEY={...}` on a dict-valued section field (`trainer.lr_multipliers`, `trainer.callbacks`) replaces the
dict; Hydra alone would merge into it. See docs/CONFIG.md.
"""

import difflib
import math
import os
import re
import typing
from typing import Any, List, Optional

import attrs
from omegaconf import DictConfig, ListConfig, OmegaConf

from cosmos_transfer.config import experiments
from cosmos_transfer.config.errors import ConfigError
from cosmos_transfer.config.schema import COMPONENTS, SECTIONS, Config

__all__ = ["override", "freeze", "to_plain_dict", "to_yaml", "from_yaml", "load_make_config"]

# ----------------------------------------------------------------------------------------------------------------------
# Freezing and printing
# ----------------------------------------------------------------------------------------------------------------------


def freeze(config: Config) -> Config:
    """Make a composed config read-only (attrs fields and LazyDicts); returns the same object."""
    for name in COMPONENTS:
        value = getattr(config, name)
        if isinstance(value, (DictConfig, ListConfig)):
            OmegaConf.set_readonly(value, True)
    for name in SECTIONS:
        section = getattr(config, name)
        if isinstance(section.__dict__.get("callbacks"), (DictConfig, ListConfig)):
            OmegaConf.set_readonly(section.callbacks, True)
        object.__setattr__(section, "_frozen", True)
    object.__setattr__(config, "_frozen", True)
    return config


def to_plain_dict(config: Config) -> dict:
    """The config as plain Python containers (interpolations resolved), without the Hydra defaults list."""
    out: dict[str, Any] = {}
    for name in COMPONENTS:
        value = getattr(config, name)
        out[name] = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    for name in SECTIONS:
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
    unknown = sorted(set(loaded.keys()) - set(COMPONENTS) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"Config file '{path}' has unknown top-level keys {unknown}; expected "
                          f"{list(COMPONENTS) + list(SECTIONS)}")
    for name in SECTIONS:
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


def _check_each_is_an_assignment(overrides: List[str]) -> None:
    """Every override is KEY=VALUE (or `~KEY` to delete); a bare word is most often the rest of a value the shell cut
    at a space (an unquoted path), which Hydra's grammar error does not name."""
    for index, item in enumerate(overrides):
        if "=" in item or item.strip().startswith("~"):
            continue
        message = f"Override {item!r} is not KEY=VALUE (or ~KEY to delete a key)."
        start = index
        while start > 0 and "=" not in overrides[start - 1]:
            start -= 1
        if start > 0:
            end = index
            while end + 1 < len(overrides) and "=" not in overrides[end + 1]:
                end += 1
            joined = " ".join(overrides[start - 1:end + 1])
            message += (" If it is the rest of the value before it, cut at a space by the shell, quote the whole "
                        f"override: \"{joined}\"")
        raise ConfigError(message)


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


# Keys that moved to a place of their own: an override of the old key is told the new one.
_MOVED_KEYS = {"model.ema": "ema"}


def _moved_key(full_key: str, overrides: List[str]) -> str:
    """'model.ema.s' (the key of the override that failed at `full_key`) -> 'ema.s'; '' for a key that did not move."""
    keys = [o.lstrip("+~").split("=", 1)[0].strip() for o in overrides]
    key = next((k for k in keys if k == full_key or k.startswith(full_key + ".")), full_key)
    for old, new in _MOVED_KEYS.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    return ""


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
        moved = _moved_key(full_key, overrides)
        if moved:
            return f"Unknown config key '{full_key}': it moved. Did you mean: {moved}?"
        hint = _suggest(full_key, _known_keys(overrides))
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
    for name in COMPONENTS:
        node = composed.get(name)
        if isinstance(node, (DictConfig, ListConfig)):
            container = OmegaConf.to_container(node, resolve=True)
            _check_finite_numbers(container, name)
            node = OmegaConf.create(container, flags={"allow_objects": True})
        values[name] = node
    for name, cls in SECTIONS.items():
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


def _dict_fields() -> dict[str, Any]:
    """'trainer.lr_multipliers' -> its attrs field, for every dict-valued field of the sections (from the schema)."""
    return {f"{section}.{field.name}": field for section, cls in SECTIONS.items() for field in attrs.fields(cls)
            if typing.get_origin(field.type) is dict}


def _take_dict_assignments(overrides: List[str]) -> tuple[List[str], dict[str, tuple[str, dict]]]:
    """Take `KEY={...}` on a dict-valued field out of the Hydra overrides, to replace the dict after composing.

    Hydra merges a dict given with `=` into the dict that is there (an experiment's `trainer.lr_multipliers` survived
    `trainer.lr_multipliers={}`) and refuses new keys in it; a user writing `=` means "this dict". `++KEY={...}` keeps
    Hydra's merge. Returns the overrides left for Hydra and {KEY: (override text, dict)}; the last assignment wins.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fields = _dict_fields()
    kept: List[str] = []
    assigned: dict[str, tuple[str, dict]] = {}
    for text in overrides:
        key, separator, _ = text.partition("=")
        if separator and key.strip() in fields:
            try:
                value = OverridesParser.create().parse_override(text).value()
            except Exception:  # noqa: BLE001 - a malformed value: Hydra's own parse reports it below
                value = None
            if isinstance(value, dict):
                assigned[key.strip()] = (text, value)
                continue
        kept.append(text)
    for key, (text, value) in assigned.items():
        path = key.split(".")
        touches = (o for o in kept if re.sub(r"^[+~]+", "", o).split("=", 1)[0].strip().split(".")[:len(path)] == path)
        other = next(touches, None)  # `++KEY=...`, `KEY.entry=...`, `~KEY.entry`: would act on the dict being replaced
        if other is not None:
            raise ConfigError(f"{key} is replaced by '{text}' and also changed by '{other}' on the same command line; "
                              f"put every entry in the one dict: {key}={{...}}")
        value_type = (typing.get_args(fields[key].type) or (str, Any))[1]
        if value_type is float:
            for entry, number in value.items():
                if isinstance(number, bool) or not isinstance(number, (int, float)):
                    raise ConfigError(f"{key}[{entry!r}] is {number!r} in '{text}'; expected a number")
    return kept, assigned


def _deselect_null_group(text: str) -> str:
    """`GROUP=null` (e.g. `ema=null`: train without an EMA) -> Hydra's `~GROUP`, which Hydra alone would refuse with
    "Config group override must be a string"; anything else unchanged."""
    match = re.fullmatch(r"([A-Za-z_]\w*)=(null|None)", text.strip())
    return f"~{match.group(1)}" if match and match.group(1) in _groups() else text


def override(config: Config, overrides: List[str]) -> Config:
    """Compose `config` with Hydra overrides (`["--", "experiment=NAME", "trainer.max_iter=7", ...]`).

    Only the experiment file that defines NAME is imported (see config/experiments.py). Interpolations are
    resolved, and the attrs sections are rebuilt (type-checked). `KEY={...}` on a dict-valued field replaces the dict
    (see _take_dict_assignments). Raises ConfigError with a one-paragraph message for an unknown key, a wrong type, an
    unknown group option or experiment.
    """
    from hydra.core.global_hydra import GlobalHydra

    overrides = _strip_separator(overrides)
    _check_each_is_an_assignment(overrides)
    # `experiment=null` means no experiment (the default); Hydra would read it as an unknown key.
    overrides = [o for o in overrides if not re.fullmatch(r"\+{0,2}experiment=(null|None|)", o.strip())]
    overrides = [_deselect_null_group(o) for o in overrides]
    name = _requested_experiment(overrides)
    if name is not None:
        experiments.load_experiment(name)
    overrides, replacements = _take_dict_assignments(overrides)
    _register_primary(config)
    GlobalHydra.instance().clear()
    try:
        composed = _compose(overrides)
        for key, (_, value) in replacements.items():
            OmegaConf.update(composed, key, value, merge=False)
    except Exception as error:  # noqa: BLE001 - Hydra raises many types; all become one clear message
        raise ConfigError(_explain_composition_error(error, overrides)) from error
    finally:
        GlobalHydra.instance().clear()
    try:
        OmegaConf.resolve(composed)
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"Could not resolve an interpolation in the config: {error}") from error
    return _rebuild(config, composed)

