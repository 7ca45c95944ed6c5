"""Config classes, Hydra composition through override(): defaults order, packages, experiments, errors, freezing."""

import os

import attrs
import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from configs.train import make_config
from cosmos_transfer.config.compose import freeze, override, to_yaml
from cosmos_transfer.config.errors import ConfigError, FrozenConfigError
from cosmos_transfer.config.lazy import LazyCall as L
from cosmos_transfer.config.schema import Config, JobConfig, TrainerConfig


def test_default_config_composes_every_group_into_its_package():
    config = override(make_config(), [])
    assert config.model._target_ == "cosmos_transfer.diffusion.model.DiffusionModel"
    assert config.model.net._target_.startswith("cosmos_transfer.networks.")  # net -> model.net
    assert config.model.tokenizer._target_.startswith("cosmos_transfer.tokenizers.")  # tokenizer -> model.tokenizer
    assert config.model.conditioner._target_.endswith("VideoConditioner")  # conditioner -> model.conditioner
    assert config.ema._target_ == "cosmos_transfer.ema.PowerEMA"  # ema -> ema (its own component)
    assert config.optimizer._target_ == "torch.optim.AdamW" and config.optimizer.lr == 5e-5
    assert config.scheduler._target_.startswith("cosmos_transfer.trainer.schedulers.")
    assert "_target_" in config.dataloader_train and "_target_" in config.dataloader_val
    assert isinstance(config.trainer, TrainerConfig) and isinstance(config.job, JobConfig)
    assert config.defaults[-1] == {"experiment": None}


@pytest.mark.slow
def test_every_group_has_an_option_that_composes():
    make_config()
    repo = ConfigStore.instance().repo
    groups = ["net", "net_ctrl", "hint_key", "conditioner", "tokenizer", "optimizer", "scheduler", "ema", "callbacks",
              "checkpoint", "data_train", "data_val", "model"]
    for group in groups:
        options = sorted(name[:-5] for name in repo[group])
        composed = []
        for option in options:  # some options need others (e.g. a 7B branch over a 7B net); one alone must compose
            try:
                override(make_config(), [f"{group}={option}"])
            except ConfigError:
                continue
            composed.append(option)
            break
        assert composed, f"no option of group {group} composes on its own: {options}"


def test_group_choice_and_value_overrides():
    config = override(make_config(), ["--", "scheduler=constant", "optimizer.lr=1e-3", "net_ctrl=tiny",
                                      "hint_key=control_input_depth", "trainer.max_iter=7"])
    assert config.scheduler._target_ == "cosmos_transfer.trainer.schedulers.constant"
    assert config.optimizer.lr == 1e-3 and config.trainer.max_iter == 7
    assert config.model.net_ctrl._target_  # net_ctrl -> model.net_ctrl
    assert list(config.dataloader_train.dataset.hint_keys) == ["depth"]  # hint_key -> _global_


def test_make_config_is_idempotent():
    first = override(make_config(), ["trainer.max_iter=3"])
    second = override(make_config(), ["trainer.max_iter=3"])
    assert to_yaml(first) == to_yaml(second)


def _sgd_config(self_first: bool) -> Config:
    make_config()  # registers the groups
    defaults = ["_self_", {"optimizer": "adamw"}] if self_first else [{"optimizer": "adamw"}, "_self_"]
    return Config(optimizer=L("torch.optim.SGD")(lr=0.5), defaults=defaults)


def test_self_placement_decides_who_wins():
    # `_self_` first: the group option is merged over the Config's own values.
    config = override(_sgd_config(self_first=True), [])
    assert config.optimizer._target_ == "torch.optim.AdamW" and config.optimizer.lr == 5e-5
    # `_self_` last: the Config's own values are merged over the group option (keys of both survive).
    config = override(_sgd_config(self_first=False), [])
    assert config.optimizer._target_ == "torch.optim.SGD" and config.optimizer.lr == 0.5
    assert config.optimizer.weight_decay == 0.1


def test_experiment_overrides_groups_and_command_line_overrides_experiment():
    config = override(make_config(), ["experiment=example_tiny"])
    assert config.scheduler._target_.endswith(".constant")  # from the experiment's defaults
    assert config.optimizer.lr == 1e-4 and config.trainer.max_iter == 20
    assert config.job.name == "example_tiny"
    config = override(make_config(), ["experiment=example_tiny", "trainer.max_iter=7", "scheduler=lambdalinear"])
    assert config.trainer.max_iter == 7
    assert config.scheduler._target_.endswith(".lambda_linear")


def test_loop_generated_experiment():
    config = override(make_config(), ["experiment=example_tiny_posttrain_lambdalinear"])
    assert config.scheduler._target_.endswith(".lambda_linear")
    assert config.optimizer.lr == 2e-5 and config.trainer.max_iter == 20
    assert config.job.name == "example_tiny_posttrain_lambdalinear"


def test_interpolations_are_resolved():
    config = override(make_config(), ["job.name=${job.group}_run", "job.group=mygroup"])
    assert config.job.name == "mygroup_run"


def test_job_path_uses_output_root(monkeypatch):
    monkeypatch.setenv("OUTPUT_ROOT", "/some/root")
    assert JobConfig(project="p", group="g", name="n").path == os.path.join("/some/root", "p", "g", "n")
    monkeypatch.delenv("OUTPUT_ROOT")
    assert JobConfig().path == os.path.join("./outputs", "cosmos_transfer", "debug", "default")


@pytest.mark.parametrize(
    "override_text, expected",
    [
        ("trainer.max_itr=5", r"Unknown config key 'trainer\.max_itr'\. Did you mean: trainer\.max_iter"),
        ("optimizer.lrr=5", r"Unknown config key 'optimizer\.lrr'\. Did you mean: optimizer\.lr"),
        ("trainer.max_iter=abc", r"Wrong type for 'trainer\.max_iter': got 'abc', expected int"),
        ("trainer.compile=maybe", r"Wrong type for 'trainer\.compile'.*expected bool"),
        ("optimizer=adamx", r"Unknown option 'adamx' for config group 'optimizer'\. Did you mean: adamw"),
        ("trainer.activation_checkpointing=some", r"trainer\.activation_checkpointing is 'some'; expected one of"),
        ("trainer.grad_accum_iter=0", r"trainer\.grad_accum_iter is 0; expected a value >= 1"),
    ],
)
def test_bad_overrides_give_one_clear_message(override_text, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        override(make_config(), [override_text])
    assert "\n" not in str(info.value)


def test_adding_a_key_needs_plus():
    config = override(make_config(), ["+optimizer.foreach=false"])
    assert config.optimizer.foreach is False


def test_freeze_blocks_changes():
    config = freeze(override(make_config(), []))
    with pytest.raises(FrozenConfigError, match="trainer.max_iter cannot be changed"):
        config.trainer.max_iter = 3
    with pytest.raises(FrozenConfigError):
        config.model = None
    with pytest.raises(Exception, match="read-only"):
        config.optimizer.lr = 1.0
    # An unfrozen copy is still editable.
    other = override(make_config(), [])
    other.trainer.max_iter = 3
    assert other.trainer.max_iter == 3


def test_attrs_classes_are_slots_free_and_components_are_lazydicts():
    config = override(make_config(), [])
    assert not attrs.fields(Config).model.type is None
    assert "__dict__" in dir(config.trainer)
    assert isinstance(config.model, DictConfig)


def test_to_yaml_is_plain_and_resolved():
    text = to_yaml(override(make_config(), ["trainer.max_iter=9"]))
    assert "max_iter: 9" in text and "defaults" not in text and "${" not in text


def test_experiment_null_means_none():
    assert override(make_config(), ["experiment=null", "trainer.max_iter=4"]).trainer.max_iter == 4


def test_config_yaml_round_trip(tmp_path):
    from cosmos_transfer.config.compose import from_yaml

    config = override(make_config(), ["experiment=example_tiny", "trainer.max_iter=7"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(config))
    again = from_yaml(str(path))
    assert to_yaml(again) == to_yaml(config)
    assert again.trainer.max_iter == 7 and again.job.name == "example_tiny"
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="does not hold a mapping"):
        from_yaml(str(tmp_path / "bad.yaml"))
    (tmp_path / "odd.yaml").write_text("trainer: {max_iter: 1}\nmodle: {}\n")
    with pytest.raises(ConfigError, match=r"unknown top-level keys \['modle'\]"):
        from_yaml(str(tmp_path / "odd.yaml"))


def test_ema_is_a_group_of_its_own():
    """The EMA is no model argument: group `ema` lands at `ema` (the trainer builds it around the sharded model)."""
    config = override(make_config(), [])
    assert config.ema._target_ == "cosmos_transfer.ema.PowerEMA" and config.ema.s == 0.1 and "ema" not in config.model
    assert override(make_config(), ["ema.s=0.05"]).ema.s == 0.05
    assert override(make_config(), ["ema=power_s005"]).ema.s == 0.05
    for no_ema in ("ema=null", "ema=None", "~ema"):
        assert override(make_config(), [no_ema]).ema is None, no_ema
    # Also over an experiment that picks an EMA option itself ({"override /ema": "power"}).
    assert override(make_config(), ["experiment=demo_edge_tiny", "ema=null"]).ema is None
    with pytest.raises(ConfigError, match=r"'model.ema': it moved. Did you mean: ema.s\?"):
        override(make_config(), ["model.ema.s=0.05"])


def test_a_value_cut_at_a_space_is_named_with_the_quoting_that_fixes_it():
    # The shell splits `checkpoint.load_path=/data/my runs/x.pt` into two words; Hydra's parse error named neither.
    with pytest.raises(ConfigError) as error:
        override(make_config(), ["trainer.max_iter=3", "checkpoint.load_path=/data/my", "runs/x.pt"])
    message = str(error.value)
    assert "'runs/x.pt' is not KEY=VALUE" in message
    assert "\"checkpoint.load_path=/data/my runs/x.pt\"" in message
    quoted = override(make_config(), ["checkpoint.load_path=/data/my runs/x.pt"])
    assert quoted.checkpoint.load_path == "/data/my runs/x.pt"
