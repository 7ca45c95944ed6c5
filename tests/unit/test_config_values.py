"""Numbers and job names the config must refuse at compose time (issue 14, item 7).

A NaN gradient-clipping threshold silently turned clipping off (`total > nan` is never true); a NaN or infinite
learning rate, weight decay or timeout trains garbage or crashes far from the override; `job.name=../..` wrote the
job folder outside OUTPUT_ROOT. Each must end in one ConfigError naming the key and what was expected.
"""

import os

import pytest

from configs.train import make_config
from cosmos_transfer.config.compose import from_yaml, override
from cosmos_transfer.config.errors import ConfigError
from cosmos_transfer.config.schema import JobConfig, TrainerConfig


@pytest.mark.parametrize("item", [
    "trainer.clip_grad_norm=nan",
    "trainer.clip_grad_norm=inf",
    "trainer.timeout_s=inf",
    "trainer.timeout_s=nan",
    "trainer.sample_guidance=nan",
    "trainer.peak_tflops=nan",
    "trainer.peak_tflops=-inf",
])
def test_non_finite_trainer_numbers_are_refused_naming_the_key(item):
    key, value = item.split("=")
    with pytest.raises(ConfigError) as error:
        override(make_config(), ["--", item])
    message = str(error.value)
    assert key in message and value in message and "finite" in message, message


@pytest.mark.parametrize("item", [
    "optimizer.lr=nan",
    "optimizer.lr=inf",
    "optimizer.weight_decay=nan",
    "optimizer.eps=-inf",
    "optimizer.betas=[0.9,nan]",
    "scheduler.f_start=[nan]",
    "ema.s=nan",
])
def test_non_finite_numbers_in_components_are_refused_naming_the_key(item):
    key = item.split("=")[0]
    with pytest.raises(ConfigError) as error:
        override(make_config(), ["--", item])
    message = str(error.value)
    assert key in message and "finite" in message, message


def test_non_finite_integers_are_refused_as_wrong_type():
    with pytest.raises(ConfigError, match="trainer.max_nan_steps"):
        override(make_config(), ["--", "trainer.max_nan_steps=nan"])


def test_finite_numbers_still_compose():
    config = override(make_config(), ["--", "trainer.clip_grad_norm=0", "optimizer.lr=1e-4", "trainer.timeout_s=60"])
    assert config.trainer.clip_grad_norm == 0 and config.optimizer.lr == 1e-4


def test_a_config_yaml_with_nan_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("trainer:\n  clip_grad_norm: .nan\n")
    with pytest.raises(ConfigError, match="trainer.clip_grad_norm"):
        from_yaml(str(path))


def test_python_construction_is_checked_too():
    with pytest.raises(ConfigError, match="clip_grad_norm"):
        TrainerConfig(clip_grad_norm=float("nan"))


@pytest.mark.parametrize("item", [
    "job.name=../..",
    "job.name=a/../../b",
    "job.name=..",
    "job.name=.",
    "job.name=",
    "job.group=..",
    "job.group=x/y",
    "job.project=/etc",
    "job.project=..",
])
def test_job_names_cannot_leave_the_output_root(item, monkeypatch, tmp_path):
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "outputs"))
    key = item.split("=")[0]
    with pytest.raises(ConfigError) as error:
        override(make_config(), ["--", item])
    assert key in str(error.value) and "folder name" in str(error.value), str(error.value)


def test_job_name_checked_on_assignment_and_construction():
    with pytest.raises(ConfigError, match="job.name"):
        JobConfig(name="../escape")
    job = JobConfig()
    with pytest.raises(ConfigError, match="job.group"):
        job.group = "a/b"


def test_an_ordinary_job_path_stays_under_output_root(monkeypatch, tmp_path):
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path))
    config = override(make_config(), ["--", "job.name=run-1.v2_b", "job.group=team", "job.project=proj"])
    path = os.path.realpath(config.job.path)
    assert path == os.path.join(os.path.realpath(tmp_path), "proj", "team", "run-1.v2_b")


def test_non_finite_lr_multipliers_are_refused():
    with pytest.raises(ConfigError) as error:
        override(make_config(), ["--", "++trainer.lr_multipliers={*norm*: nan}"])
    assert "trainer.lr_multipliers" in str(error.value) and "finite" in str(error.value), str(error.value)


def test_documented_lr_multipliers_override_composes():
    """docs/TRAINING.md's Troubleshooting override, exactly as written there (new keys, no `++`)."""
    config = override(make_config(), ["--", "trainer.lr_multipliers={*adaLN_modulation*: 0.05, *t_embedder*: 0.05}"])
    assert config.trainer.lr_multipliers == {"*adaLN_modulation*": 0.05, "*t_embedder*": 0.05}


def test_assigning_a_dict_replaces_the_experiments_dict():
    """`=` on a dict-valued field replaces it: the experiment's multipliers do not survive silently."""
    assert override(make_config(), ["experiment=demo_edge_tiny"]).trainer.lr_multipliers  # the experiment sets some
    cleared = override(make_config(), ["--", "experiment=demo_edge_tiny", "trainer.lr_multipliers={}"])
    assert cleared.trainer.lr_multipliers == {}
    other = override(make_config(), ["--", "experiment=demo_edge_tiny", "trainer.lr_multipliers={*norm*: 0.5}"])
    assert other.trainer.lr_multipliers == {"*norm*": 0.5}
    last = override(make_config(), ["--", "trainer.lr_multipliers={a: 2}", "trainer.lr_multipliers={b: 3}"])
    assert last.trainer.lr_multipliers == {"b": 3.0}  # the last assignment wins
    # The other dict-valued field: trainer.callbacks={} switches every callback off.
    assert override(make_config(), ["callbacks=loss_line"]).trainer.callbacks
    assert dict(override(make_config(), ["--", "callbacks=loss_line", "trainer.callbacks={}"]).trainer.callbacks) == {}
    # `++` keeps Hydra's meaning: merge into what is there.
    merged = override(make_config(), ["--", "experiment=demo_edge_tiny", "++trainer.lr_multipliers={*norm*: 0.5}"])
    assert merged.trainer.lr_multipliers["*norm*"] == 0.5 and len(merged.trainer.lr_multipliers) > 1


def test_bad_dict_assignments_are_refused_in_one_paragraph():
    with pytest.raises(ConfigError, match=r"trainer\.lr_multipliers.*'a'.*expected a number") as error:
        override(make_config(), ["--", "trainer.lr_multipliers={a: abc}"])
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"trainer\.lr_multipliers is replaced by .* and also changed by"):
        override(make_config(), ["--", "trainer.lr_multipliers={a: 2}", "+trainer.lr_multipliers.b=3"])
    with pytest.raises(ConfigError, match=r"trainer\.lr_multipliers.*finite"):
        override(make_config(), ["--", "trainer.lr_multipliers={a: nan}"])
