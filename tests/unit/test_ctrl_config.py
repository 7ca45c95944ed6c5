"""Control configs: net_ctrl follows model.net, hint_key sets model and datasets, the control experiments compose."""

import pytest
import torch

from configs.train import make_config
from cosmos_transfer.config.compose import override
from cosmos_transfer.config.lazy import instantiate


def compose(*overrides: str):
    return override(make_config(), ["--", *overrides])


def test_tiny_control_experiment_builds_and_trains_one_step():
    config = compose("experiment=ctrl_tiny")
    assert list(config.model.hint_keys) == ["edge"]
    assert list(config.dataloader_train.dataset.hint_keys) == ["edge"]
    torch.manual_seed(0)
    model = instantiate(config.model)
    assert type(model).__name__ == "ControlDiffusionModel" and list(model.net_ctrl) == ["edge"]
    branch = model.net_ctrl["edge"]
    assert branch.in_channels == model.net.in_channels and len(branch.blocks) == 1
    # One step on a small batch (5 frames, 32 x 32; the demo data is 17 x 64 x 64).
    g = torch.Generator().manual_seed(0)
    video = lambda: torch.randint(0, 256, (1, 3, 5, 32, 32), generator=g, dtype=torch.uint8)  # noqa: E731
    batch = {"video": video(), "control_input_edge": video(), "padding_mask": torch.zeros(1, 1, 32, 32),
             "fps": torch.tensor([24.0]), "image_size": torch.tensor([[32.0, 32.0, 32.0, 32.0]]),
             "t5_text_embeddings": torch.randn(1, 8, 384, generator=g), "t5_text_mask": torch.ones(1, 8)}
    loss, metrics = model.training_step(batch)
    loss.backward()
    assert torch.isfinite(loss) and metrics["mse"] > 0
    assert branch.zero_blocks.block0.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.net.parameters())


def test_branch_architecture_follows_the_base_and_hint_key_switches_everything():
    config = compose("experiment=ctrl_tiny", "model.net.model_channels=32", "model.net.num_heads=4",
                     "hint_key=control_input_depth")
    assert config.model.net_ctrl.model_channels == 32 and config.model.net_ctrl.num_heads == 4
    assert list(config.model.hint_keys) == ["depth"]
    assert list(config.dataloader_train.dataset.hint_keys) == ["depth"]
    assert list(config.dataloader_val.dataset.hint_keys) == ["depth"]


@pytest.mark.parametrize("name, keys", [("ctrl_7b_seg_posttrain", ["seg"]),
                                        ("ctrl_7b_joint_posttrain", ["edge", "vis", "depth"])])
def test_7b_control_experiments_compose(name, keys):
    config = compose(f"experiment={name}")
    model = config.model
    assert model._target_.endswith("ControlDiffusionModel") and list(model.hint_keys) == keys
    assert model.base_dtype == "bfloat16" and model.finetune_base is False and model.video2world is True
    assert model.net.num_blocks == 28 and model.net.in_channels == 17
    assert model.net_ctrl.in_channels == 17 and model.net_ctrl.num_control_blocks == 3
    assert model.net_ctrl.hint_channels == 128
    assert list(model.net_ctrl.hint_block_channels) == [16, 16, 32, 32, 96, 96, 256]  # official files load strictly
    assert list(config.dataloader_train.dataset.hint_keys) == keys
    assert config.dataloader_train.dataset.num_frames == 121
    assert config.trainer.activation_checkpointing == "full"
    assert "net_ctrl.*.zero_blocks.*" in config.checkpoint.allowed_missing_keys


def test_every_hint_key_has_an_experiment():
    from cosmos_transfer.config.experiments import list_experiments

    names = {name for name, _ in list_experiments()}
    assert {f"ctrl_7b_{k}_posttrain" for k in ("edge", "vis", "depth", "seg", "keypoint")} <= names
    assert {"ctrl_7b_joint_posttrain", "ctrl_tiny"} <= names


@pytest.mark.parametrize("option, video2world", [("ctrl", False), ("ctrl_video2world", True)])
def test_model_group_has_the_control_models(option, video2world):
    overrides = [f"model={option}", "net=tiny", "net_ctrl=tiny", "hint_key=control_input_vis", "tokenizer=pixel",
                 "model.net.out_channels=48", f"model.net.in_channels={49 if video2world else 48}"]
    config = compose(*overrides)
    assert list(config.model.hint_keys) == ["vis"] and config.model.video2world is video2world
    model = instantiate(config.model)
    assert type(model).__name__ == "ControlDiffusionModel" and list(model.net_ctrl) == ["vis"]
    assert not any(p.requires_grad for p in model.net.parameters())  # the base is frozen by default


# The branch's RoPE as NVIDIA's configs set it: cosmos-transfer1 `config/inference/cosmos-1-diffusion-control2world.py`
# (Base_7B_Config: net rope (h, w, t) = (1, 1, 2); make_ctrlnet_config_7b: the net_ctrl dict sets no RoPE ratio) and
# `diffusion/training/experiment/ctrl_7b_tp_121frames.py` (the same split), over `config/transfer/net_ctrl.py`
# (FADITV2EncoderConfig: a copy of FADITV2Config, which sets none either): the branch runs at GeneralDIT's default 1.0.
@pytest.mark.parametrize("experiment, base_rope", [
    ("ctrl_7b_edge_posttrain", (1.0, 1.0, 2.0)),
    ("ctrl_7b_joint_posttrain", (1.0, 1.0, 2.0)),
])
def test_branch_rope_is_the_official_one_not_the_base_s(experiment, base_rope):
    model = compose(f"experiment={experiment}").model
    axes = ("h", "w", "t")
    assert tuple(model.net[f"rope_{a}_extrapolation_ratio"] for a in axes) == base_rope
    assert tuple(model.net_ctrl[f"rope_{a}_extrapolation_ratio"] for a in axes) == (1.0, 1.0, 1.0)
    assert tuple(model.net_ctrl[f"extra_{a}_extrapolation_ratio"] for a in axes) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("net_option, base_rope", [("cosmos_7b", (1.0, 1.0, 2.0)), ("cosmos_14b", (2.0, 2.0, 2.0)),
                                                   ("tiny", (1.0, 1.0, 1.0))])
def test_every_option_shares_the_architecture_but_not_the_rope(net_option, base_rope):
    config = compose("experiment=ctrl_tiny", f"net={net_option}", f"net_ctrl={net_option}",
                     "++model.net.rope_t_extrapolation_ratio=3.0")  # a user's base change does not reach the branch
    net, branch = config.model.net, config.model.net_ctrl
    for key in ("model_channels", "num_heads", "in_channels", "max_img_h", "max_frames", "patch_spatial"):
        assert branch[key] == net[key], key
    assert net.rope_t_extrapolation_ratio == 3.0 and branch.rope_t_extrapolation_ratio == 1.0
    assert (net.get("rope_h_extrapolation_ratio", 1.0), net.get("rope_w_extrapolation_ratio", 1.0)) == base_rope[:2]
    assert (branch.rope_h_extrapolation_ratio, branch.rope_w_extrapolation_ratio) == (1.0, 1.0)


def test_an_undecided_base_argument_is_refused():
    from configs.net_ctrl import branch_arguments

    with pytest.raises(ValueError, match="neither in SHARED_WITH_BASE nor in BRANCH_OWN"):
        branch_arguments({"_target_": "x", "model_channels": 8, "new_argument": 1})
