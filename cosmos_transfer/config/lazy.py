"""Lazy component configs: describe a call now, make it later.

    from cosmos_transfer.config.lazy import LazyCall as L, instantiate

    optimizer = L("torch.optim.AdamW")(lr=5e-5, weight_decay=0.1)   # a LazyDict, nothing imported yet
    optimizer.lr = 1e-4                                              # edit it like any config
    opt = instantiate(optimizer, params=model.parameters())         # call-time kwargs win over config values

A `LazyDict` is an OmegaConf `DictConfig` whose `_target_` names what to call. The target may be a class, a function
or a dotted import string; a class or function whose dotted name imports back to the same object is stored as that
string, so configs stay plain YAML (printable, overridable from the command line, cheap to compose) and a config
file can name `torch.optim.AdamW` without importing torch. Only `instantiate` ever imports or calls a target.

Special keys understood by `instantiate`:
  `_target_`   what to call (dotted string or callable)
  `_partial_`  if true, return `functools.partial(target, **kwargs)` instead of calling it
Nested LazyDicts are built first (depth first), so a model config can hold its network's and tokenizer's configs.
"""

import builtins
import dataclasses
import functools
import importlib
from collections.abc import Mapping
from typing import Any

import attrs
from omegaconf import DictConfig, ListConfig

from cosmos_transfer.config.errors import InstantiationError

__all__ = ["LazyCall", "L", "LazyDict", "instantiate", "PLACEHOLDER", "locate", "target_name"]

# A LazyDict is a DictConfig with a `_target_` key. It is an alias, so `LazyDict(dict(a=1))` builds one (the way
# Cosmos experiment files write it) and `isinstance(x, LazyDict)` works.
LazyDict = DictConfig

# A value that a group option, an experiment or a command-line override is expected to fill in (e.g. `Config.model`).
PLACEHOLDER = None

TARGET_KEY = "_target_"
PARTIAL_KEY = "_partial_"
_SPECIAL_KEYS = (TARGET_KEY, PARTIAL_KEY)


def locate(name: str) -> Any:
    """Import the object named by a dotted path, e.g. "torch.optim.AdamW" or "package.module.Class.method"."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"expected a dotted import path such as 'torch.optim.AdamW', got {name!r}")
    if "." not in name:
        if hasattr(builtins, name):
            return getattr(builtins, name)
        raise ImportError(f"cannot locate {name!r}: expected a dotted path 'module.attribute' (e.g. 'torch.optim.AdamW')")
    parts = name.split(".")
    # Import the longest importable module prefix, then walk attributes.
    module = None
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # Only swallow "this prefix is not a module"; a missing dependency inside a real module must surface.
            if error.name is None or not (module_name == error.name or module_name.startswith(error.name + ".")):
                raise
            continue
        obj = module
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError as error:
            raise ImportError(f"cannot locate {name!r}: module {module_name!r} has no attribute path "
                              f"{'.'.join(parts[split:])!r}") from error
        return obj
    raise ImportError(f"cannot locate {name!r}: no importable module among its prefixes (first part {parts[0]!r})")


def target_name(target: Any) -> str:
    """Dotted name of a callable ("module.QualName"), or the string itself."""
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if module is None or qualname is None:
        return repr(target)
    return f"{module}.{qualname}"


def _as_config_target(target: Any) -> Any:
    """Store a target as its dotted name when that name imports back to the very same object."""
    if isinstance(target, str):
        return target
    name = target_name(target)
    if "<locals>" not in name and not name.startswith("__main__."):
        try:
            if locate(name) is target:
                return name
        except (ImportError, ValueError):
            pass
    return target  # a local class or function: kept as the object (the config then holds a Python object)


class LazyCall:
    """`LazyCall(target)(**kwargs)` returns a LazyDict `{_target_: target, **kwargs}` instead of calling target.

    target: a class, a function, or a dotted import string ("torch.optim.AdamW").
    """

    def __init__(self, target: Any):
        if not (callable(target) or isinstance(target, str)):
            raise TypeError(f"LazyCall expects a class, a function or a dotted import string, got {target!r}")
        if isinstance(target, str) and not target:
            raise ValueError("LazyCall got an empty target string")
        self._target = target

    def __call__(self, **kwargs: Any) -> DictConfig:
        node: dict[str, Any] = {TARGET_KEY: _as_config_target(self._target)}
        node.update(kwargs)
        return DictConfig(content=node, flags={"allow_objects": True})


L = LazyCall


def _fields_of(target: Any) -> dict[str, Any] | None:
    """Field name -> declared type for attrs classes and dataclasses, else None."""
    if isinstance(target, type) and attrs.has(target):
        return {field.name: field.type for field in attrs.fields(target)}
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        return {field.name: field.type for field in dataclasses.fields(target)}
    return None


def _is_structured_class(tp: Any) -> bool:
    return isinstance(tp, type) and (attrs.has(tp) or dataclasses.is_dataclass(tp))


def _build(node: Any, path: str) -> Any:
    """Recursively instantiate LazyDicts inside node; other containers become plain dicts/lists."""
    if isinstance(node, (DictConfig, Mapping)):
        if isinstance(node, DictConfig) and node._is_none():
            return None
        if TARGET_KEY in node:
            return _call(node, {}, path)
        keys = list(node.keys())
        return {key: _build(node[key], f"{path}.{key}" if path else str(key)) for key in keys}
    if isinstance(node, (ListConfig, list, tuple)) and not isinstance(node, str):
        if isinstance(node, ListConfig) and node._is_none():
            return None
        items = [_build(item, f"{path}[{i}]") for i, item in enumerate(node)]
        return tuple(items) if isinstance(node, tuple) else items
    return node


def _call(node: Any, call_kwargs: dict[str, Any], path: str) -> Any:
    where = f" at '{path}'" if path else ""
    raw_target = node[TARGET_KEY]
    target = locate(raw_target) if isinstance(raw_target, str) else raw_target
    if not callable(target):
        raise InstantiationError(f"_target_{where} is {raw_target!r}, which is not callable")
    partial = bool(node.get(PARTIAL_KEY, False))

    kwargs: dict[str, Any] = {}
    for key in node.keys():
        if key in _SPECIAL_KEYS or key in call_kwargs:
            continue  # call-time kwargs override config values; don't even build the overridden ones
        kwargs[str(key)] = _build(node[key], f"{path}.{key}" if path else str(key))
    kwargs.update(call_kwargs)

    # attrs / dataclass targets: a plain dict given for a field declared as another attrs/dataclass class is built
    # into that class, so structured configs nest naturally.
    fields = _fields_of(target)
    if fields is not None:
        unknown = sorted(set(kwargs) - set(fields))
        if unknown:
            raise InstantiationError(f"{target_name(target)}{where} has no field(s) {unknown}; "
                                     f"its fields are {sorted(fields)}")
        for key, value in kwargs.items():
            if isinstance(value, dict) and _is_structured_class(fields[key]):
                kwargs[key] = _call({TARGET_KEY: fields[key], **value}, {}, f"{path}.{key}")

    if partial:
        return functools.partial(target, **kwargs)
    try:
        return target(**kwargs)
    except TypeError as error:
        # Most often a misspelled or missing keyword argument: say which config and which target.
        raise InstantiationError(f"calling {target_name(target)}{where} failed: {error}") from error


def import_targets(config: Any) -> None:
    """Import the module of every `_target_` string in `config` (nested too) now. Call it before building under
    `torch.device("meta")`: a module imported first inside that context creates its module-level tensors on the meta
    device for the rest of the process."""
    if isinstance(config, (Mapping, DictConfig)):
        target = config.get(TARGET_KEY)
        if isinstance(target, str):
            locate(target)
        for value in config.values():
            import_targets(value)
    elif isinstance(config, (list, tuple, ListConfig)):
        for value in config:
            import_targets(value)


def instantiate(config: Any, **kwargs: Any) -> Any:
    """Build the object a LazyDict describes, recursively; `kwargs` override (or add to) the config's arguments.

    Containers without `_target_` are returned as plain dicts/lists with their LazyDicts built. None stays None.
    """
    if config is None:
        if kwargs:
            raise InstantiationError(f"cannot instantiate an empty (None) config with arguments {sorted(kwargs)}")
        return None
    if isinstance(config, (DictConfig, Mapping)) and TARGET_KEY in config:
        return _call(config, kwargs, "")
    if kwargs:
        raise InstantiationError(f"cannot pass arguments {sorted(kwargs)} to a config without '_target_': {config!r}")
    return _build(config, "")
