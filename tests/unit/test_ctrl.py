"""ControlNet: zero-init identity, official control-checkpoint names, control weights, multi-control, frozen base,
joint multi-hint training. Tiny networks on CPU."""

import io
import os
import sys

import pytest
import torch
from torch import nn

from cosmos_transfer.checkpoints import files, transfer1
from cosmos_transfer.diffusion.conditioner import VideoConditioner
from cosmos_transfer.diffusion.edm import build_logvar_head
from cosmos_transfer.diffusion.model import DiffusionModel
from cosmos_transfer.diffusion.model_ctrl import ControlCondition, ControlDiffusionModel
from cosmos_transfer.networks.dit import GeneralDIT
from cosmos_transfer.networks.dit_ctrl import (
    NEW_BRANCH_KEY_PATTERNS,
    GeneralDITControl,
    normalize_control_weights,
    prepare_control_weights,
    resample_weight_map,
)
from tests.helpers import REPO_DIR as REPO

sys.path.insert(0, os.path.join(REPO, "scripts"))
import convert_checkpoint  # noqa: E402

ARCH = dict(max_img_h=16, max_img_w=16, max_frames=8, in_channels=4, out_channels=4, model_channels=32,
            num_heads=2, crossattn_emb_channels=8, adaln_lora_dim=8)
NUM_BLOCKS, NUM_CONTROL_BLOCKS, HINT_CHANNELS = 3, 2, 8


class ConvTokenizer(nn.Module):
    """Stand-in tokenizer: a fixed 2x2 strided conv, 3 -> 4 channels (frozen; outside the model's module tree)."""

    latent_channels, spatial_compression, temporal_compression = 4, 2, 1

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv3d(3, 4, (1, 2, 2), stride=(1, 2, 2))

    def encode(self, video):
        return self.proj(video)

    def decode(self, latent):
        return latent[:, :3].repeat_interleave(2, -1).repeat_interleave(2, -2)

    def latent_num_frames(self, n):
        return n

    def pixel_num_frames(self, n):
        return n


def randomize_(module: nn.Module, std: float = 0.1) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)


def make_base(seed=0) -> GeneralDIT:
    torch.manual_seed(seed)
    base = GeneralDIT(num_blocks=NUM_BLOCKS, **ARCH)
    randomize_(base)  # the official init zeroes AdaLN outputs; random weights make every path count
    return base


def make_model(hint_keys=("edge",), base=None, **kwargs) -> ControlDiffusionModel:
    base = make_base() if base is None else base
    branch = GeneralDITControl(num_control_blocks=NUM_CONTROL_BLOCKS, hint_channels=HINT_CHANNELS,
                               num_blocks=NUM_BLOCKS, **ARCH)
    return ControlDiffusionModel(base, ConvTokenizer(), VideoConditioner(), net_ctrl=branch, hint_keys=hint_keys,
                                 **kwargs)


def make_batch(batch_size=2, frames=2, size=8, keys=("edge",), seed=0):
    g = torch.Generator().manual_seed(seed)

    def video():
        return torch.randint(0, 256, (batch_size, 3, frames, size, size), generator=g, dtype=torch.uint8)

    batch = {
        "video": video(),
        "padding_mask": torch.zeros(batch_size, 1, size, size),
        "fps": torch.full((batch_size,), 24.0),
        "image_size": torch.tensor([[size, size, size, size]] * batch_size, dtype=torch.float32),
        "t5_text_embeddings": torch.randn(batch_size, 5, 8, generator=g),
        "t5_text_mask": torch.ones(batch_size, 5),
    }
    for key in keys:
        batch[f"control_input_{key}"] = video()
    return batch


def randomize_control_layers_(branch: GeneralDITControl) -> None:
    randomize_(branch.zero_blocks)
    randomize_(branch.input_hint_block[-1])


# ------------------------------------------------------------------------------------------- zero-init identity
def test_zero_init_controlled_model_equals_base_exactly():
    model = make_model().eval()
    reference = DiffusionModel(model.net, model.tokenizer, VideoConditioner()).eval()
    reference.logvar.load_state_dict(model.logvar.state_dict())  # the uncertainty heads have random Fourier features
    batch = make_batch()
    x = torch.randn(2, 4, 2, 4, 4)
    sigma = torch.tensor([0.5, 3.0])
    condition = model._extend_condition(dict(batch), model.conditioner(batch))
    assert torch.equal(model.denoise(x, sigma, condition), reference.denoise(x, sigma, reference.conditioner(batch)))
    # A whole training step (same random draws) gives the same loss, bit for bit.
    model.train()
    reference.train()
    torch.manual_seed(1)
    loss, _ = model.training_step(batch)
    torch.manual_seed(1)
    reference_loss, _ = reference.training_step(batch)
    assert torch.equal(loss, reference_loss)


def test_branch_is_initialized_from_base_and_really_injects():
    model = make_model().eval()
    branch = model.net_ctrl["edge"]
    base_state = model.net.state_dict()
    for name, value in branch.state_dict().items():
        if name in base_state:
            assert torch.equal(value, base_state[name]), name
    assert list(branch.blocks) == ["block0", "block1"]
    # Non-zero control layers change the output; the residual reaches the base only through its first blocks.
    randomize_control_layers_(branch)
    batch = make_batch()
    x, sigma = torch.randn(2, 4, 2, 4, 4), torch.tensor([1.0, 1.0])
    condition = model._extend_condition(dict(batch), model.conditioner(batch))
    base_out = DiffusionModel(model.net, model.tokenizer, VideoConditioner()).eval().denoise(
        x, sigma, model.conditioner(batch))
    assert not torch.allclose(model.denoise(x, sigma, condition), base_out)
    # A different control video gives a different prediction.
    other = dict(batch, control_input_edge=torch.flip(batch["control_input_edge"], dims=[-1]))
    other_condition = model._extend_condition(other, model.conditioner(other))
    assert not torch.allclose(model.denoise(x, sigma, condition), model.denoise(x, sigma, other_condition))


# ---------------------------------------------------------------------------------- official control checkpoint
def official_control_state(seed=0) -> dict:
    """An official-layout control file at tiny size, written from the original GeneralDITEncoder's structure."""
    g = torch.Generator().manual_seed(seed)
    D, ps = ARCH["model_channels"], 2
    # The branch's GeneralDIT part: the base's names for blocks 0..N-1 (official: layer_mask drops the others).
    state = {f"net.{k}": torch.randn(v.shape, generator=g) for k, v in
             GeneralDIT(num_blocks=NUM_CONTROL_BLOCKS, **ARCH).state_dict().items()}
    state["net.pos_embedder.seq"] = torch.arange(8, dtype=torch.float32)
    # Control-only parts: hint patch embedding (hint + padding-mask channel), the hint MLP 16-16-32-32-96-96-256 with
    # SiLUs between (Linears at even indices, the last one zero-initialized at 14) and one Linear per block.
    shapes = {"net.x_embedder2.proj.1.weight": (D, (HINT_CHANNELS + 1) * ps * ps)}
    widths = [D, 16, 16, 32, 32, 96, 96, 256, D]
    for i in range(8):
        shapes[f"net.input_hint_block.{2 * i}.weight"] = (widths[i + 1], widths[i])
        shapes[f"net.input_hint_block.{2 * i}.bias"] = (widths[i + 1],)
    for b in range(NUM_CONTROL_BLOCKS):
        shapes[f"net.zero_blocks.block{b}.weight"] = (D, D)
        shapes[f"net.zero_blocks.block{b}.bias"] = (D,)
    state.update({k: torch.randn(s, generator=g) for k, s in shapes.items()})
    state.update({f"logvar.{k}": torch.randn(v.shape, generator=g) for k, v in build_logvar_head().state_dict().items()})
    state["net.blocks.block0.blocks.0.block.attn.attn_op._extra_state"] = io.BytesIO(b"te fp8 meta")
    return state


def test_official_control_names_load_strictly_into_the_branch(tmp_path):
    official = official_control_state()
    torch.save(official, tmp_path / "edge_control.pt")
    found = transfer1.read_control(str(tmp_path / "edge_control.pt"))
    assert found.layout == "control" and not found.has_base
    assert found.left_out == ["net.blocks.block0.blocks.0.block.attn.attn_op._extra_state"]
    ours = transfer1.branch_of(found, "edge")
    branch_state = {k[len("net_ctrl.edge."):]: v for k, v in ours.items() if k.startswith("net_ctrl.edge.")}
    branch = GeneralDITControl(num_control_blocks=NUM_CONTROL_BLOCKS, hint_channels=HINT_CHANNELS, **ARCH)
    branch.load_state_dict(branch_state, strict=True)  # every official name, nothing else
    assert torch.equal(branch.zero_blocks.block1.weight, official["net.zero_blocks.block1.weight"])
    assert torch.equal(branch.input_hint_block[14].bias, official["net.input_hint_block.14.bias"])
    assert torch.equal(ours["logvar.1.weight"], official["logvar.1.weight"])
    # A base file given where a control file is needed is named as such.
    torch.save({k: v for k, v in official.items() if "x_embedder2" not in k}, tmp_path / "base_model.pt")
    with pytest.raises(files.WeightsFileError, match="given as a control-branch file, but it holds the base only"):
        transfer1.read_control(str(tmp_path / "base_model.pt"))


def test_convert_cli_base_plus_official_control_loads_strictly_and_round_trips(tmp_path):
    base = make_base()
    base_file = str(tmp_path / "base_model.pt")
    base_logvar = build_logvar_head()
    base_state = {f"net.{k}": v for k, v in base.state_dict().items()}
    base_state.update({f"logvar.{k}": v for k, v in base_logvar.state_dict().items()})
    torch.save(base_state, base_file)
    official = official_control_state()
    control_file = str(tmp_path / "edge_control.pt")
    torch.save({"model": official}, control_file)

    out = str(tmp_path / "ctrl.safetensors")
    assert convert_checkpoint.main(["to-ours", base_file, out, "--control", f"edge={control_file}"]) == 0
    model = make_model(base=make_base(seed=5))
    model.load_state_dict(files.load_weights_file(out), strict=True)
    assert torch.equal(model.net.blocks.block2.blocks[2].block.layer1.weight, base.blocks.block2.blocks[2].block.layer1.weight)
    assert torch.equal(model.net_ctrl["edge"].x_embedder2.proj[1].weight, official["net.x_embedder2.proj.1.weight"])
    assert torch.equal(model.logvar[1].weight, official["logvar.1.weight"])  # the branch's trained head

    back = str(tmp_path / "edge_back.pt")
    assert convert_checkpoint.main(["to-official", out, back, "--control-key", "edge"]) == 0
    written = torch.load(back, weights_only=True)
    expected = {k: v for k, v in official.items() if not k.endswith("_extra_state")}
    assert set(written) == set(expected)
    assert all(torch.equal(written[k], expected[k]) for k in expected)


def test_convert_cli_new_branch_copies_base(tmp_path):
    base = make_base()
    base_file = str(tmp_path / "base_model.pt")
    torch.save({f"net.{k}": v for k, v in base.state_dict().items()}, base_file)
    out = str(tmp_path / "init.safetensors")
    assert convert_checkpoint.main(["to-ours", base_file, out, "--new-control", "edge", "--new-control", "depth",
                                    "--num-control-blocks", str(NUM_CONTROL_BLOCKS)]) == 0
    weights = files.load_weights_file(out)
    model = make_model(hint_keys=["edge", "depth"], base=make_base(seed=7))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected
    import fnmatch
    assert missing and all(any(fnmatch.fnmatch(k, p) for p in NEW_BRANCH_KEY_PATTERNS + ("logvar.*",)) for k in missing)
    for key in ("edge", "depth"):
        branch = model.net_ctrl[key]
        assert torch.equal(branch.blocks.block1.blocks[0].block.attn.to_q[0].weight,
                           base.blocks.block1.blocks[0].block.attn.to_q[0].weight)
        assert torch.equal(branch.t_embedder[1].linear_1.weight, base.t_embedder[1].linear_1.weight)


# ---------------------------------------------------------------------------------------------- control weights
def test_control_weight_forms():
    grid = (2, 4, 4)  # token grid T', H', W'
    scalar = prepare_control_weights(0.5, 2, 3, grid, normalize=False)
    assert scalar.shape == (2, 3, 2, 16, 1) and torch.all(scalar == 0.5)
    per_control = prepare_control_weights([0.2, 0.7], 2, 1, grid)
    assert torch.all(per_control[0] == 0.2) and torch.all(per_control[1] == 0.7)
    assert torch.equal(prepare_control_weights(torch.tensor([0.2, 0.7]), 2, 1, grid), per_control)
    # Latent-resolution map [B,1,T,H,W] (latent 2 x 8 x 8 -> tokens 2 x 4 x 4): halving by trilinear interpolation
    # (align_corners=False) samples between 2 x 2 latent pixels, i.e. averages them.
    latent_map = torch.zeros(1, 1, 2, 8, 8)
    latent_map[..., :, 4:] = 1.0
    latent_map[..., 1, 0, 0] = 1.0  # one latent pixel of the 4 of token (1, 0, 0)
    tokens = prepare_control_weights(latent_map, 1, 1, grid)[0, 0, :, :, 0].reshape(2, 4, 4)
    expected = torch.zeros(2, 4, 4)
    expected[:, :, 2:] = 1.0
    expected[1, 0, 0] = 0.25
    assert torch.equal(tokens, expected)
    # One map per control, [K,B,1,T,H,W], and a mixed list (number + map).
    stacked = prepare_control_weights(torch.stack([latent_map, 1 - latent_map]), 2, 1, grid)
    assert torch.allclose(stacked.sum(0), torch.ones(1, 2, 16, 1))
    mixed = prepare_control_weights([0.3, latent_map], 2, 1, grid, normalize=False)
    assert torch.all(mixed[0] == 0.3) and torch.equal(mixed[1, 0, :, :, 0].reshape(2, 4, 4), expected)
    with pytest.raises(ValueError, match="2 controls"):
        prepare_control_weights([1.0, 1.0, 1.0], 2, 1, grid)
    with pytest.raises(ValueError, match="frames"):
        prepare_control_weights(torch.ones(1, 1, 5, 8, 8), 1, 1, grid)
    with pytest.raises(ValueError, match="B 1 or 2"):
        prepare_control_weights(torch.ones(3, 1, 2, 8, 8), 1, 2, grid)


# Expected values below are computed by hand from NVIDIA's rule: cosmos-transfer1 diffusion/inference/
# inference_utils.py, resize_control_weight_map (trilinear, align_corners=False; frame 0 alone to (1, h, w), frames
# 1.. to (T-1, h, w)), called by world_generation_pipeline.py _run_model with the token grid (t, h // 2, w // 2).
# align_corners=False samples output index i of a resize by factor s at input coordinate (i + 0.5) * s - 0.5.
def test_weight_map_resampling_matches_hand_computed_trilinear_values():
    # A linear map w = 100 t + 10 y + x is reproduced exactly at the sampled coordinates.
    t, y, x = torch.meshgrid(torch.arange(9.0), torch.arange(4.0), torch.arange(4.0), indexing="ij")
    linear = (100 * t + 10 * y + x)[None, None]  # pixel frames 1 + 8 * (2 - 1) = 9, 4 x 4 pixels
    tokens = resample_weight_map(linear, (2, 2, 2), latent_frames=2, temporal_compression=8)[0, 0]
    # Space 4 -> 2: coordinate 2i + 0.5. Frame 0 stays frame 0; frames 1..8 (8 of them) -> 1 frame at coordinate
    # 0.5 * 8 - 0.5 = 3.5 of that group, i.e. pixel frame 1 + 3.5 = 4.5.
    for i in range(2):
        for j in range(2):
            assert tokens[0, i, j] == 10 * (2 * i + 0.5) + (2 * j + 0.5)
            assert tokens[1, i, j] == 100 * 4.5 + 10 * (2 * i + 0.5) + (2 * j + 0.5)
    # Shrinking 8 -> 2 samples coordinate 4i + 1.5: only pixels 4i + 1 and 4i + 2 count (no area average), so a
    # weight at pixel (0, 0) vanishes and one at (1, 1) gives its token a quarter.
    for (py, px), value in (((0, 0), 0.0), ((1, 1), 0.25), ((2, 2), 0.25), ((3, 3), 0.0)):
        one_hot = torch.zeros(1, 1, 1, 8, 8)
        one_hot[..., py, px] = 1.0
        assert resample_weight_map(one_hot, (1, 2, 2), latent_frames=1)[0, 0, 0, 0, 0] == value
    # Time 17 pixel frames -> 3 latent frames: frame 0 alone; frames 1..16 -> 2 frames at 3.5 and 11.5 of the group
    # (pixel frames 4.5 and 12.5), no averaging over the 8 frames of a latent frame.
    ramp = torch.arange(17.0).view(1, 1, 17, 1, 1).expand(1, 1, 17, 2, 2)
    resampled = resample_weight_map(ramp, (3, 2, 2), latent_frames=3, temporal_compression=8)[0, 0, :, 0, 0]
    assert resampled.tolist() == [0.0, 4.5, 12.5]
    # A map already at the latent frames is resized in space only; a one-frame map holds for every frame.
    latent = torch.rand(1, 1, 3, 2, 2)
    assert torch.equal(resample_weight_map(latent, (3, 2, 2), latent_frames=3), latent)
    still = resample_weight_map(torch.full((1, 1, 1, 4, 4), 0.7), (3, 2, 2), latent_frames=3)
    assert still.shape == (1, 1, 3, 2, 2) and torch.allclose(still, torch.full_like(still, 0.7))


# NVIDIA's weights (inference_utils.py load_spatial_temporal_weights): numbers are not clamped and are divided by
# their sum where it exceeds 1 (`w / w.sum().clip(1)`); maps (and numbers mixed with maps) are clamped at 0 and
# normalized per pixel at the video's resolution, before resize_control_weight_map.
def test_normalization_follows_nvidia_numbers_and_maps():
    grid = (1, 1, 1)

    def numbers(values):
        return prepare_control_weights(values, len(values), 1, grid)[:, 0, 0, 0, 0].tolist()

    assert numbers([0.9, 0.6]) == pytest.approx([0.6, 0.4])  # sum 1.5 -> divided
    assert numbers([0.3, 0.2]) == pytest.approx([0.3, 0.2])  # sum 0.5 -> unchanged
    assert numbers([2.0]) == [1.0]  # one control above 1 acts at 1
    assert numbers([-0.5]) == [-0.5]  # no clamping: a negative weight subtracts the residual
    assert numbers([1.5, -0.5]) == [1.5, -0.5]  # sum 1: unchanged, above 1 and below 0 alike
    torch.testing.assert_close(normalize_control_weights(torch.tensor([[0.9, -1.0], [0.6, 0.5]])),
                               torch.tensor([[0.6, -1.0], [0.4, 0.5]]))
    # With a map, everything is clamped at 0: the number -0.5 becomes 0.
    one = torch.ones(1, 1, 1, 2, 2)
    mixed = prepare_control_weights([-0.5, one * 0.5], 2, 1, grid)[:, 0, 0, 0, 0]
    assert mixed.tolist() == [0.0, 0.5]
    # Normalized before resampling, as NVIDIA: maps [2, 0] and [0, 0] over two pixels -> [1, 0] -> token 0.5
    # (resampling first would give 1 / max(1, 1) = 1).
    first = torch.tensor([2.0, 0.0]).view(1, 1, 1, 1, 2)
    weights = prepare_control_weights([first, torch.zeros_like(first)], 2, 1, grid)
    assert weights[0].item() == 0.5 and weights[1].item() == 0.0
    # Maps of another size than the first one's are resized to it (trilinear) before the per-pixel normalization.
    coarse = torch.full((1, 1, 1, 1, 1), 3.0)
    weights = prepare_control_weights([one, coarse], 2, 1, (1, 2, 2))[:, 0, 0, :, 0]
    torch.testing.assert_close(weights, torch.tensor([[0.25] * 4, [0.75] * 4]))


def test_spatio_temporal_map_scales_branch_residuals_per_token():
    model = make_model().eval()
    branch = model.net_ctrl["edge"]
    randomize_control_layers_(branch)
    x = torch.randn(1, 4, 2, 8, 8)
    t, text, hint = torch.tensor([0.3]), torch.randn(1, 5, 8), torch.randn(1, 4, 2, 8, 8)
    full = branch(x, t, text, hint=hint, control_weight=1.0)
    weight_map = torch.rand(1, 1, 2, 8, 8)  # latent resolution
    tokens = prepare_control_weights(weight_map, 1, 1, (2, 4, 4))[0]
    mapped = branch(x, t, text, hint=hint, control_weight=tokens)
    for name in full:
        torch.testing.assert_close(mapped[name], full[name] * tokens)
    zero_left = torch.ones(1, 1, 2, 8, 8)
    zero_left[..., :4] = 0
    masked = branch(x, t, text, hint=hint, control_weight=prepare_control_weights(zero_left, 1, 1, (2, 4, 4))[0])
    residual = masked["block1"].reshape(1, 2, 4, 4, -1)
    assert torch.all(residual[:, :, :, :2] == 0) and torch.all(residual[:, :, :, 2:] != 0)


# --------------------------------------------------------------------------------------------- multi-control
@pytest.mark.slow
def test_multi_control_sums_branch_residuals_with_normalized_weights():
    model = make_model(hint_keys=["edge", "depth"]).eval()
    for branch in model.net_ctrl.values():
        randomize_control_layers_(branch)
    batch = dict(make_batch(keys=("edge", "depth")), control_weight=[0.9, 0.6])  # sum 1.5 -> 0.6, 0.4
    condition = model._extend_condition(dict(batch), model.conditioner(batch))
    x, t = torch.randn(2, 4, 2, 4, 4), torch.tensor([0.1, -0.2])
    out = model._net_forward(x, t, condition)

    kwargs = condition.network_kwargs()
    residuals = {}
    for key, w in (("edge", 0.6), ("depth", 0.4)):
        for name, r in model.net_ctrl[key](x, t, **kwargs, hint=condition.hints[key], control_weight=w).items():
            residuals[name] = residuals.get(name, 0) + r
    torch.testing.assert_close(out, model.net(x, t, **kwargs, block_residuals=residuals))
    # Weights whose sum is at most 1 are used as given.
    small = model.control_weight_tokens(condition.replace(control_weight=[0.3, 0.2]), x.shape)
    assert torch.allclose(small[0], torch.tensor(0.3)) and torch.allclose(small[1], torch.tensor(0.2))


# ------------------------------------------------------------------------------------------- training behaviour
def test_frozen_base_gets_no_gradient_and_no_optimizer_state():
    model = make_model().train()
    base_ids = {id(p) for p in model.net.parameters()}
    trainable = model.trainable_parameters()
    assert base_ids.isdisjoint(id(p) for p in trainable)
    assert all(not p.requires_grad for p in model.net.parameters())
    assert not any(p is q for p in trainable for q in model.net_ctrl["edge"].final_layer.parameters())
    assert any(p is model.logvar[1].weight for p in trainable)  # the uncertainty head trains with the branch

    loss, metrics = model.training_step(make_batch())
    loss.backward()
    assert all(p.grad is None for p in model.net.parameters())
    branch = model.net_ctrl["edge"]
    assert branch.zero_blocks.block0.weight.grad.abs().sum() > 0  # the zero layers learn first
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    optimizer.step()
    assert all(torch.equal(v, before[k]) for k, v in model.net.state_dict().items())
    assert branch.zero_blocks.block0.weight.abs().sum() > 0
    assert all(id(p) not in base_ids for p in optimizer.state)


def test_finetune_base_trains_base_and_drops_the_control_per_sample():
    model = make_model(finetune_base=True, branch_dropout_rate=0.5).train()
    assert any(p is model.net.x_embedder.proj[1].weight for p in model.trainable_parameters())
    randomize_control_layers_(model.net_ctrl["edge"])
    loss, _ = model.training_step(make_batch())
    loss.backward()
    assert model.net.blocks.block2.blocks[2].block.layer2.weight.grad.abs().sum() > 0
    # branch_keep = 0 gives the base model's prediction; the draw keeps about half the samples.
    batch = make_batch()
    condition = model._extend_condition(dict(batch), model.conditioner.eval()(batch))
    x, sigma = torch.randn(2, 4, 2, 4, 4), torch.tensor([1.0, 2.0])
    dropped = model.denoise(x, sigma, condition.replace(branch_keep=torch.zeros(2)))
    reference = DiffusionModel(model.net, model.tokenizer, VideoConditioner()).eval()
    torch.testing.assert_close(dropped, reference.denoise(x, sigma, model.conditioner(batch)))
    torch.manual_seed(0)
    big = make_batch(batch_size=400, frames=1, size=2)
    keep = model._extend_condition(big, model.conditioner(big)).branch_keep
    assert set(keep.tolist()) == {0.0, 1.0} and 0.42 < keep.mean().item() < 0.58


def test_joint_multi_hint_training_with_per_hint_dropout():
    model = make_model(hint_keys=["control_input_edge", "depth"], hint_dropout_rate=0.5).train()
    assert model.hint_keys == ["edge", "depth"]
    torch.manual_seed(0)
    keep = model._draw_hint_keep(4000)
    assert torch.all(keep.sum(1) >= 1)  # never both dropped
    # Each hint dropped with p=0.5, the both-dropped quarter rescued half-half: each kept with p=0.625.
    assert abs(keep.mean().item() - 0.625) < 0.03
    # Kept hints share the weight as at inference: both kept -> 0.5 each; one kept -> 1 and 0.
    batch = make_batch(keys=("edge", "depth"))
    condition = model._extend_condition(dict(batch), model.conditioner(batch))
    weights = model.control_weight_tokens(condition.replace(hint_keep=torch.tensor([[1.0, 1.0], [1.0, 0.0]])),
                                          (2, 4, 2, 4, 4))
    assert torch.all(weights[:, 0] == 0.5)
    assert torch.all(weights[0, 1] == 1.0) and torch.all(weights[1, 1] == 0.0)
    # A joint training step: both branches learn.
    torch.manual_seed(3)
    loss, metrics = model.training_step(make_batch(batch_size=4, keys=("edge", "depth")))
    assert torch.isfinite(loss) and metrics["mse"] >= 0
    loss.backward()
    for key in ("edge", "depth"):
        assert model.net_ctrl[key].zero_blocks.block1.weight.grad.abs().sum() > 0, key


def test_bfloat16_base_with_float32_branch():
    model = make_model(base_dtype="bfloat16").eval()
    assert model.net.x_embedder.proj[1].weight.dtype == torch.bfloat16
    assert model.net_ctrl["edge"].x_embedder.proj[1].weight.dtype == torch.float32
    randomize_control_layers_(model.net_ctrl["edge"])
    batch = make_batch()
    condition = model._extend_condition(dict(batch), model.conditioner(batch))
    out = model.denoise(torch.randn(2, 4, 2, 4, 4), torch.tensor([1.0, 2.0]), condition)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_clear_errors():
    model = make_model()
    batch = make_batch()
    del batch["control_input_edge"]
    with pytest.raises(KeyError, match="control_input_edge"):
        model.training_step(batch)
    with pytest.raises(ValueError, match="hint_channels"):
        ControlDiffusionModel(make_base(), ConvTokenizer(), net_ctrl=GeneralDITControl(
            num_control_blocks=1, hint_channels=2, **ARCH))
    with pytest.raises(ValueError, match="base's architecture"):
        ControlDiffusionModel(make_base(), ConvTokenizer(), net_ctrl=GeneralDITControl(
            num_control_blocks=1, hint_channels=8, **dict(ARCH, model_channels=48)))
    with pytest.raises(ValueError, match="exceeds"):
        GeneralDITControl(num_control_blocks=4, num_blocks=3, **ARCH)
    for widths in ([], [16, 0], [8.5]):
        with pytest.raises(ValueError, match="hint_block_channels"):
            GeneralDITControl(num_control_blocks=1, hint_block_channels=widths, **ARCH)
    with pytest.raises(ValueError, match="repeats"):
        make_model(hint_keys=["edge", "control_input_edge"])
    assert isinstance(model._extend_condition(make_batch(), model.conditioner(make_batch())), ControlCondition)


@pytest.mark.slow
def test_generate_samples_with_per_control_weights_and_a_pixel_map():
    model = make_model(hint_keys=["edge", "depth"]).eval()
    for branch in model.net_ctrl.values():
        randomize_control_layers_(branch)
    batch = make_batch(batch_size=1, keys=("edge", "depth"))
    pixel_map = torch.zeros(1, 1, 2, 8, 8)
    pixel_map[..., 4:] = 1.0  # depth controls the right half only
    with_map = model.generate_samples(dict(batch, control_weight=[0.5, pixel_map]), num_steps=2, guidance=1.0)
    no_depth = model.generate_samples(dict(batch, control_weight=[0.5, 0.0]), num_steps=2, guidance=1.0)
    assert with_map.shape == (1, 4, 2, 4, 4) and torch.isfinite(with_map).all()
    assert not torch.allclose(with_map, no_depth)
    again = model.generate_samples(dict(batch, control_weight=[0.5, pixel_map]), num_steps=2, guidance=1.0)
    assert torch.equal(with_map, again)  # seeded


def test_finetuning_a_bf16_base_is_refused():
    with pytest.raises(ValueError, match="master"):
        make_model(finetune_base=True, base_dtype="bfloat16")


def test_video2world_control_model_sees_the_condition_mask_channel():
    arch = dict(ARCH, in_channels=5)  # 4 latent channels + the condition mask
    torch.manual_seed(0)
    base = GeneralDIT(num_blocks=2, **arch)
    randomize_(base)
    branch = GeneralDITControl(num_control_blocks=1, hint_channels=HINT_CHANNELS, **arch)
    model = ControlDiffusionModel(base, ConvTokenizer(), net_ctrl=branch, video2world=True).eval()
    reference = DiffusionModel(base, model.tokenizer, video2world=True).eval()
    batch = make_batch()
    latent = model.encode(batch["video"])
    condition = model.with_condition_frames(model._extend_condition(dict(batch), model.conditioner(batch)), latent,
                                            torch.tensor([1, 0]))
    reference_condition = reference.with_condition_frames(reference.conditioner(batch), latent, torch.tensor([1, 0]))
    x, sigma = torch.randn_like(latent), torch.tensor([2.0, 2.0])
    assert torch.equal(model.denoise(x, sigma, condition), reference.denoise(x, sigma, reference_condition))
    randomize_control_layers_(branch)
    assert not torch.equal(model.denoise(x, sigma, condition), reference.denoise(x, sigma, reference_condition))


# ------------------------------------------------------------------------------------- hint latents as an argument
def test_hint_latents_are_an_argument_and_the_batch_is_left_alone():
    """generate_samples(..., hint_latents=...) uses the caller's latents (inference encodes the control videos while
    the tokenizer visits the device); no model writes into the caller's batch (a private `_hint_latents` key did)."""
    model = make_model(hint_keys=["edge", "depth"]).eval()
    for branch in model.net_ctrl.values():
        randomize_control_layers_(branch)
    batch = make_batch(batch_size=1, keys=("edge", "depth"))
    keys = sorted(batch)
    hints = model.encode_hints(batch)
    assert sorted(hints) == ["depth", "edge"] and hints["edge"].shape == (1, 4, 2, 4, 4)
    model._extend_condition(batch, model.conditioner(batch))
    assert sorted(batch) == keys
    encoded_inside = model.generate_samples(batch, num_steps=2, guidance=1.0)
    given = model.generate_samples(batch, num_steps=2, guidance=1.0, hint_latents=hints)
    assert torch.equal(encoded_inside, given) and sorted(batch) == keys
    # The given latents are the ones used, under either name of a hint key.
    zeros = {"control_input_edge": torch.zeros_like(hints["edge"]), "depth": hints["depth"]}
    assert not torch.allclose(model.generate_samples(batch, num_steps=2, guidance=1.0, hint_latents=zeros), given)
    with pytest.raises(ValueError, match=r"hint_latents has the keys \['edge'\]; expected .*\['depth', 'edge'\]"):
        model.generate_samples(batch, num_steps=1, hint_latents={"edge": hints["edge"]})
    base = DiffusionModel(model.net, model.tokenizer, VideoConditioner()).eval()
    assert base.encode_hints(batch) == {}
    with pytest.raises(ValueError, match="DiffusionModel: hint_latents has the keys"):
        base.generate_samples(batch, num_steps=1, hint_latents=hints)


def test_the_hint_mlp_has_the_official_widths_unless_told_and_starts_at_zero():
    """input_hint_block: NVIDIA's D-16-16-32-32-96-96-256-D by default (official control files load strictly); the
    demo's shallow, wide MLP (one hidden layer of 256) by hint_block_channels. Both end in a zero Linear."""
    official = GeneralDITControl(num_control_blocks=1, hint_channels=8, **ARCH)
    linears = [m for m in official.input_hint_block if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [16, 16, 32, 32, 96, 96, 256, ARCH["model_channels"]]
    wide = GeneralDITControl(num_control_blocks=1, hint_channels=8, hint_block_channels=[256], **ARCH)
    linears = [m for m in wide.input_hint_block if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 256), (256, 32)]
    assert not linears[-1].weight.any() and not linears[-1].bias.any()
    assert linears[0].weight.std() > 0
