"""LazyCall / LazyDict / instantiate."""

import dataclasses
import functools
import sys
from collections import OrderedDict

import attrs
import pytest
from omegaconf import DictConfig, OmegaConf

from cosmos_transfer.config.errors import InstantiationError
from cosmos_transfer.config.lazy import PLACEHOLDER, L, LazyCall, LazyDict, instantiate, locate


def add(a, b=10):
    return a + b


@attrs.define
class Inner:
    x: int = 1


@attrs.define
class Outer:
    inner: Inner
    name: str = "outer"


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0


def test_lazycall_stores_importable_targets_as_dotted_strings():
    assert L is LazyCall
    config = L(OrderedDict)(a=1)
    assert isinstance(config, DictConfig) and isinstance(config, LazyDict)
    assert config._target_ == "collections.OrderedDict"
    assert L(add)(a=1)._target_ == f"{__name__}.add"
    assert L("collections.OrderedDict")(a=1)._target_ == "collections.OrderedDict"
    # A string target is not imported when the config is written.
    assert L("some_package_that_does_not_exist.Thing")(x=1)._target_ == "some_package_that_does_not_exist.Thing"


def test_local_callable_is_kept_as_the_object():
    def local(x):
        return x * 2

    config = L(local)(x=4)
    assert config._target_ is local
    assert instantiate(config) == 8


def test_lazycall_rejects_non_callables():
    with pytest.raises(TypeError, match="LazyCall expects"):
        L(42)
    with pytest.raises(ValueError, match="empty"):
        L("")


def test_instantiate_call_time_kwargs_override_config_values():
    config = L(add)(a=1, b=2)
    assert instantiate(config) == 3
    assert instantiate(config, b=5) == 6
    assert instantiate(config, a=100) == 102
    assert config.b == 2  # the config itself is untouched


def test_instantiate_is_recursive_and_converts_containers():
    config = L(OrderedDict)(
        first=L(add)(a=1),
        listed=[L(add)(a=2), {"plain": 3}],
        nested={"deeper": L(add)(a=3, b=0)},
    )
    built = instantiate(config)
    assert built["first"] == 11
    assert built["listed"] == [12, {"plain": 3}]
    assert built["nested"] == {"deeper": 3}
    assert isinstance(built["nested"], dict) and isinstance(built["listed"], list)


def test_yaml_round_trip_builds_the_same_object():
    config = L(add)(a=L(add)(a=1, b=1), b=3)
    text = OmegaConf.to_yaml(config)
    assert "_target_: tests.test_lazy_config.add" in text or f"_target_: {__name__}.add" in text
    again = OmegaConf.create(text)
    assert instantiate(again) == instantiate(config) == 5


def test_attrs_and_dataclass_targets_build_nested_fields():
    outer = instantiate(L(Outer)(inner={"x": 5}, name="o"))
    assert outer == Outer(inner=Inner(x=5), name="o")
    assert instantiate(L(Point)(x=1.5)) == Point(x=1.5, y=0.0)
    with pytest.raises(InstantiationError, match=r"has no field\(s\) \['z'\]"):
        instantiate(L(Point)(x=1.0, z=2))


def test_partial():
    partial = instantiate(LazyDict({"_target_": f"{__name__}.add", "_partial_": True, "b": 1}))
    assert isinstance(partial, functools.partial)
    assert partial(a=2) == 3


def test_lazydict_alias_accepts_plain_dicts_like_cosmos_experiment_files():
    node = LazyDict(dict(trainer=dict(max_iter=3), defaults=["_self_"]))
    assert node.trainer.max_iter == 3


def test_errors_name_the_config_path_and_target():
    with pytest.raises(InstantiationError, match=r"calling .*add at 'inner' failed"):
        instantiate(L(OrderedDict)(inner=L(add)(c=1)))
    with pytest.raises(ImportError, match="no attribute path 'NoSuchThing'"):
        instantiate(L("collections.NoSuchThing")())
    with pytest.raises(ImportError, match="no importable module"):
        instantiate(L("no_such_module_xyz.Thing")())
    with pytest.raises(InstantiationError, match="without '_target_'"):
        instantiate({"a": 1}, b=2)


def test_missing_dependency_inside_a_real_module_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "needs_missing_dep.py").write_text("import a_dependency_that_is_not_installed\nclass Thing: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_installed"):
        locate("needs_missing_dep.Thing")
    sys.modules.pop("needs_missing_dep", None)


def test_none_and_placeholder():
    assert PLACEHOLDER is None
    assert instantiate(None) is None
    assert instantiate(L(OrderedDict)(child=None)) == OrderedDict(child=None)
