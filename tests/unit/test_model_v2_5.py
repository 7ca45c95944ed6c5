"""Cosmos25Model (diffusion/model_v2_5.py): the 2.5 nets wired to rectified flow, frozen base + trainable branches,
joint training with per-hint dropout, NVIDIA's control-weight rule; the 2.5 experiments and configs; official-layout
2.5 files through checkpoint.load_path and scripts/convert_checkpoint.py."""

import contextlib
import importlib.util
import io

import pytest
import torch

from configs.train import make_config
from cosmos_transfer.checkpoints import transfer2_5
from cosmos_transfer.config.lazy import instantiate
from cosmos_transfer.diffusion.conditioner import VideoConditioner
from cosmos_transfer.diffusion.model_v2_5 import IMAGE_CONTEXT_TOKENS, Cosmos25Model, keep_at_least_one
from cosmos_transfer.diffusion.objectives import RectifiedFlowObjective
from cosmos_transfer.inference.loading import compose_config
from cosmos_transfer.networks.dit_v2_5 import Cosmos25DiT
from cosmos_transfer.networks.dit_v2_5_control import Cosmos25ControlDiT
from cosmos_transfer.tokenizers.pixel import PixelTokenizer
from cosmos_transfer.trainer.checkpoint import load_model_weights
from tests.helpers import ROOT

NET = dict(max_img_h=16, max_img_w=16, max_frames=8, in_channels=12, out_channels=12, patch_spatial=1,
           model_channels=32, num_blocks=2, num_heads=2, crossattn_emb_channels=16, use_crossattn_projection=True,
           crossattn_proj_in_channels=24, timestep_scale=0.001)


def _tokenizer():
    return PixelTokenizer(spatial_compression=2, temporal_compression=1)  # 3 x 2 x 2 = 12 channels


def _model(keys=("edge",), image_context=None, **kwargs):
    torch.manual_seed(0)
    net = Cosmos25ControlDiT(**NET, extra_image_context_dim=image_context, vace_block_every_n=1,
                             num_max_modalities=1, num_control_branches=len(keys))
    return Cosmos25Model(net, _tokenizer(), VideoConditioner(), hint_keys=list(keys), **kwargs)


def _batch(keys=("edge",), batch_size=2, frames=3):
    torch.manual_seed(1)
    batch = dict(video=torch.randint(0, 256, (batch_size, 3, frames, 8, 8), dtype=torch.uint8),
                 padding_mask=torch.zeros(batch_size, 1, 8, 8), fps=torch.full((batch_size,), 24.0),
                 image_size=torch.tensor([[8.0, 8, 8, 8]] * batch_size),
                 t5_text_embeddings=torch.randn(batch_size, 5, 24))
    for key in keys:
        batch[f"control_input_{key}"] = torch.randint(0, 256, (batch_size, 3, frames, 8, 8), dtype=torch.uint8)
    return batch


def test_network_call_is_the_nets_own_with_the_mask_as_an_argument():
    """predict() gives the net the condition mask as `condition_mask` (not a channel), the control latents of the
    hint keys, and NVIDIA's zero image context (256 tokens); rectified flow: the output is the velocity itself."""
    model = _model(image_context=8).eval()
    batch = _batch()
    x0 = model.latent_from_batch(batch)
    condition = model._extend_condition(batch, model.conditioner(batch))
    condition = model.with_condition_frames(condition, x0, torch.tensor([1, 0]))
    x_t, sigma = torch.randn_like(x0), torch.tensor([0.7, 0.3])
    epsilon = torch.randn_like(x0)
    with torch.no_grad():
        got = model.predict(x_t, sigma, condition, epsilon)
        frames = condition.condition_frames  # [B,1,T,1,1]
        x_in = frames * x0 + (1 - frames) * x_t
        mask = frames.expand(2, 1, *x0.shape[2:])
        direct = model.net(x_in, sigma * 1000, batch["t5_text_embeddings"], [condition.hints["edge"]],
                           condition_mask=mask, fps=batch["fps"], padding_mask=batch["padding_mask"],
                           img_context_emb=torch.zeros(2, IMAGE_CONTEXT_TOKENS, 8))
    exact = epsilon - x0  # the conditioning frame's velocity is the exact one
    expected = frames * exact + (1 - frames) * direct
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_only_the_control_branch_trains_and_the_base_is_stored_bf16():
    model = _model(base_dtype="bfloat16").train()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith(("net.control_embedder.", "net.control_blocks.")) for n in names)
    assert {p.dtype for n, p in model.named_parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for n, p in model.named_parameters() if not p.requires_grad} == {torch.bfloat16}
    loss, metrics = model.training_step(_batch())
    loss.backward()
    assert torch.isfinite(loss) and metrics["mse"] > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if p.requires_grad and "after_proj" in n)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert isinstance(model.objective, RectifiedFlowObjective) and not hasattr(model, "logvar")


def test_new_branches_start_as_copies_of_the_base_blocks():
    model = _model()
    for i, block in enumerate(model.net.control_blocks):
        base = model.net.blocks[str(i)].state_dict()
        for name, value in block.state_dict().items():
            if not name.startswith(("before_proj", "after_proj")):
                assert torch.equal(value, base[name]), name


def test_joint_training_drops_hints_per_sample_keeping_one():
    torch.manual_seed(0)
    keep = keep_at_least_one(torch.rand(500, 3) >= 0.6)
    assert keep.sum(1).min() == 1 and 0 < keep.mean() < 1
    model = _model(keys=("edge", "depth"), hint_dropout_rate=0.5).train()
    batch = _batch(keys=("edge", "depth"), batch_size=8)
    condition = model._extend_condition(batch, model.conditioner(batch))
    scales = model.control_scales(condition, model.latent_from_batch(batch).shape)
    per_sample = torch.stack([s.flatten(1)[:, 0] for s in scales], 1)  # [B, K]
    torch.testing.assert_close(per_sample, condition.hint_keep)  # a dropped hint's branch gets weight 0
    loss, _ = model.training_step(batch)
    loss.backward()
    with torch.no_grad():  # sampling: nothing dropped
        condition = model.eval()._extend_condition(batch, model.conditioner(batch))
        assert condition.hint_keep is None


def test_control_weights_follow_nvidias_2p5_rule():
    """Numbers are not normalized (a weighted sum, as NVIDIA's multi-control); maps cap the sum at 1."""
    model = _model(keys=("edge", "depth")).eval()
    batch = _batch(keys=("edge", "depth"), batch_size=1)
    shape = model.latent_from_batch(batch).shape
    condition = model._extend_condition({**batch, "control_weight": [1.0, 0.8]}, model.conditioner(batch))
    assert [float(s.max()) for s in model.control_scales(condition, shape)] == pytest.approx([1.0, 0.8])
    weight_map = torch.ones(1, 1, 3, 8, 8)
    condition = model._extend_condition({**batch, "control_weight": [weight_map, 1.0]}, model.conditioner(batch))
    scales = model.control_scales(condition, shape)
    torch.testing.assert_close(scales[0] + scales[1], torch.ones_like(scales[0]))


def test_bad_arguments_are_named():
    net = Cosmos25ControlDiT(**NET, vace_block_every_n=1, num_max_modalities=1, num_control_branches=2)
    with pytest.raises(ValueError, match="2 control branch"):
        Cosmos25Model(net, _tokenizer(), hint_keys=["edge"])
    with pytest.raises(ValueError, match="need a Cosmos25ControlDiT"):
        Cosmos25Model(Cosmos25DiT(**NET), _tokenizer(), hint_keys=["edge"])
    with pytest.raises(ValueError, match="no fp32 master"):
        Cosmos25Model(Cosmos25DiT(**NET), _tokenizer(), base_dtype="bfloat16")
    from cosmos_transfer.networks.dit import GeneralDIT

    with pytest.raises(TypeError, match="Cosmos25DiT or Cosmos25ControlDiT"):
        Cosmos25Model(GeneralDIT(max_img_h=16, max_img_w=16, max_frames=8, in_channels=12, out_channels=12,
                                 model_channels=32, num_blocks=1, num_heads=2), _tokenizer())


def test_predict_base_trains_as_a_whole_and_samples_with_unipc():
    torch.manual_seed(0)
    model = Cosmos25Model(Cosmos25DiT(**NET), _tokenizer(), condition_frame_probs={0: 0.5, 1: 0.25, 2: 0.25})
    assert all(p.requires_grad for p in model.parameters())
    batch = _batch(keys=())
    loss, _ = model.training_step(batch)
    assert torch.isfinite(loss)
    sample = model.eval().generate_samples(batch, num_steps=3, guidance=2.0)
    assert sample.shape == model.latent_shape(batch) and torch.isfinite(sample).all()
    assert model.flops_per_step(batch) > 0


# ------------------------------------------------------------------------------------------- experiments, configs
EXPERIMENTS = ["transfer2p5_2b_edge_posttrain", "transfer2p5_2b_blur_posttrain", "transfer2p5_2b_depth_posttrain",
               "transfer2p5_2b_seg_posttrain", "transfer2p5_2b_joint_posttrain", "predict2p5_2b_video2world_posttrain",
               "transfer2p5_tiny"]


def test_the_2p5_experiments_are_listed_and_compose():
    from experiments import transfer2_5

    assert transfer2_5.EXPERIMENT_NAMES == EXPERIMENTS
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    listed = io.StringIO()
    with contextlib.redirect_stdout(listed):
        assert train.run(["--config=configs/train.py", "--list-experiments"]) == 0
    assert all(f"{name}\t" in listed.getvalue() for name in EXPERIMENTS)
    edge = compose_config("transfer2p5_2b_edge_posttrain", make_config=make_config)
    assert edge.model.hint_keys == ["edge"] and edge.model.base_dtype == "bfloat16"
    assert edge.model.net.model_channels == 2048 and edge.model.net.extra_image_context_dim == 1152
    assert edge.dataloader_train.dataset.num_frames == 93 and edge.dataloader_train.dataset.hint_keys == ["edge"]
    assert dict(edge.model.condition_frame_probs) == {0: 0.4, 1: 0.4, 2: 0.2}
    blur = compose_config("transfer2p5_2b_blur_posttrain", make_config=make_config)
    assert blur.model.hint_keys == ["vis"] and blur.dataloader_val.dataset.hint_keys == ["vis"]
    joint = compose_config("transfer2p5_2b_joint_posttrain", make_config=make_config)
    assert joint.model.hint_keys == ["edge", "vis", "depth", "seg"] and joint.model.net.num_control_branches == 4
    predict = compose_config("predict2p5_2b_video2world_posttrain", make_config=make_config)
    assert predict.model.net._target_.endswith("Cosmos25DiT") and predict.dataloader_train.dataset.hint_keys == []
    with torch.device("meta"):
        net = instantiate(joint.model.net)
    assert len(net.branches()) == 4 and [len(b) for b in net.branches()] == [4] * 4 and net.control_layers == \
        [0, 7, 14, 21] and net.extra_image_context_dim is None


def test_the_tiny_demo_model_builds_from_its_experiment():
    config = compose_config("transfer2p5_tiny", make_config=make_config)
    model = instantiate(config.model)
    assert isinstance(model, Cosmos25Model) and model.hint_keys == ["edge"] and model.tokenizer.latent_channels == 24
    trainable = sum(p.numel() for p in model.trainable_parameters())
    assert 0 < trainable < sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------- official-layout files, loading
def _official_file(net: torch.nn.Module, path: str) -> dict:
    """A file as NVIDIA releases them: one state dict, net.*, bf16, with the non-weights they hold."""
    state = {"net." + k: v.to(torch.bfloat16) for k, v in net.state_dict().items()}
    state["net.pos_embedder.seq"] = torch.arange(8, dtype=torch.bfloat16)
    state["net.accum_iteration"] = torch.tensor(1000)
    state["net.blocks.0.self_attn._extra_state"] = torch.zeros(0)
    torch.save(state, path)
    return state


def _source_model(seed=1, keys=("edge",), image_context=8):
    torch.manual_seed(seed)
    model = _model(keys=keys, image_context=image_context)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_a_released_transfer2p5_file_loads_strictly_through_load_path(tmp_path):
    source = _source_model()
    path = str(tmp_path / "edge_ema_bf16.pt")
    _official_file(source.net, path)
    target = _model(image_context=8)
    lines = []
    keys = load_model_weights(target, path, strict=True, report=lines.append)
    assert sorted(keys) == sorted(target.state_dict()) and "control branch 0" in lines[0]
    for name, value in target.state_dict().items():
        assert torch.equal(value, source.state_dict()[name].to(torch.bfloat16).float()), name


def test_a_predict2p5_base_starts_the_branches_from_its_blocks(tmp_path):
    source = Cosmos25DiT(**NET)
    path = str(tmp_path / "base_ema_bf16.pt")
    _official_file(source, path)
    target = _model(image_context=None)
    with pytest.raises(ValueError, match="missing keys"):
        load_model_weights(target, path, strict=True)
    load_model_weights(target, path, strict=True, allowed_missing_keys=transfer2_5.NEW_BRANCH_KEY_PATTERNS)
    base_block = {k: v.float() for k, v in source.blocks["1"].state_dict().items()}
    for name, value in target.net.control_blocks[1].state_dict().items():
        if not name.startswith("after_proj"):
            assert torch.equal(value, base_block[name].to(torch.bfloat16).float()), name


def test_a_file_with_another_number_of_branches_says_to_convert(tmp_path):
    path = str(tmp_path / "edge.pt")
    _official_file(_source_model().net, path)
    with pytest.raises(ValueError, match="convert_checkpoint.py to-ours"):
        load_model_weights(_model(keys=("edge", "depth"), image_context=8), path, strict=True)


def test_a_transfer1_style_control_file_for_a_2p5_model_says_what_to_do(tmp_path):
    from cosmos_transfer.inference.loading import load_control_file

    path = tmp_path / "edge.pt"
    _official_file(_source_model().net, str(path))
    with pytest.raises(ValueError, match="convert_checkpoint.py to-ours"):
        load_control_file(_model(image_context=8), "edge", str(path))
