"""Cosmos-2.5 weight files in NVIDIA's layout: read, split, loaded strictly, combined for several controls, written.

The NVIDIA-layout file of these tests is not made from our own names: it is diffusers' module names mapped back
through the official -> diffusers map of diffusers' scripts/convert_cosmos_to_diffusers.py
(TRANSFORMER_KEYS_RENAME_DICT_COSMOS_2_0 and CONTROLNET_KEYS_RENAME_DICT, written out below as facts), plus the
non-weight entries NVIDIA's files carry (TRANSFORMER_SPECIAL_KEYS_REMAP_COSMOS_2_0). A file that loads strictly into
our network and gives diffusers' output is then a file in NVIDIA's names.
"""

import io

import pytest
import torch

from cosmos_transfer.checkpoints import files
from cosmos_transfer.checkpoints.transfer2_5 import is_cosmos_2p5, multi_control_state, read_weights, to_official
from cosmos_transfer.networks.dit_v2_5 import Cosmos25DiT
from cosmos_transfer.networks.dit_v2_5_control import Cosmos25ControlDiT
from tests.integration import test_dit_v2_5_parity as parity

pytestmark = pytest.mark.usefixtures("diffusers_without_torchvision")

# official -> diffusers (convert_cosmos_to_diffusers.py, Cosmos 2.0/2.5), inverted: diffusers -> official.
_OFFICIAL_TO_DIFFUSERS = [
    ("t_embedder.1", "time_embed.t_embedder"), ("t_embedding_norm", "time_embed.norm"),
    ("blocks", "transformer_blocks"),
    ("adaln_modulation_self_attn.1", "norm1.linear_1"), ("adaln_modulation_self_attn.2", "norm1.linear_2"),
    ("adaln_modulation_cross_attn.1", "norm2.linear_1"), ("adaln_modulation_cross_attn.2", "norm2.linear_2"),
    ("adaln_modulation_mlp.1", "norm3.linear_1"), ("adaln_modulation_mlp.2", "norm3.linear_2"),
    ("self_attn", "attn1"), ("cross_attn", "attn2"), ("q_proj", "to_q"), ("k_proj", "to_k"), ("v_proj", "to_v"),
    ("output_proj", "to_out.0"), ("q_norm", "norm_q"), ("k_norm", "norm_k"), ("mlp.layer1", "ff.net.0.proj"),
    ("mlp.layer2", "ff.net.2"), ("x_embedder.proj.1", "patch_embed.proj"),
    ("final_layer.adaln_modulation.1", "norm_out.linear_1"), ("final_layer.adaln_modulation.2", "norm_out.linear_2"),
    ("final_layer.linear", "proj_out"),
]
# The controlnet map: the same, but "blocks" stays "blocks" (control_blocks) and control_embedder.proj.1 is its
# patch_embed.proj. Its patch_embed_base, time_embed, crossattn_proj, img_context_proj are copies of the base's.
_CONTROLNET_COPIES = ("patch_embed_base.", "time_embed.", "crossattn_proj.", "img_context_proj.")


def _official_name(diffusers_key: str, controlnet: bool) -> str:
    key = diffusers_key
    if controlnet and key.startswith("patch_embed.proj"):
        return "control_embedder.proj.1" + key[len("patch_embed.proj"):]
    for official, theirs in reversed(_OFFICIAL_TO_DIFFUSERS):
        if controlnet and official == "blocks":
            continue
        key = key.replace(theirs, official)
    return key


def _official_file(transformer, controlnet=None, seed=0) -> dict:
    """Random weights under NVIDIA's names (net.*), with the non-weights of released files."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in transformer.state_dict().items():
        state["net." + _official_name(key, False)] = torch.randn(value.shape, generator=g) * 0.2
    if controlnet is not None:
        for key, value in controlnet.state_dict().items():
            if not key.startswith(_CONTROLNET_COPIES):
                state["net." + _official_name(key, True)] = torch.randn(value.shape, generator=g) * 0.2
    state["net.pos_embedder.seq"] = torch.arange(16, dtype=torch.bfloat16)
    state["net.pos_embedder.dim_spatial_range"] = (torch.arange(0, 8, 2) / 8).bfloat16()
    state["net.pos_embedder.dim_temporal_range"] = (torch.arange(0, 8, 2) / 8).bfloat16()
    for counter in ("accum_video_sample_counter", "accum_image_sample_counter", "accum_iteration",
                    "accum_train_in_hours"):
        state["net." + counter] = torch.tensor(7)
    state["net.blocks.0.self_attn.attn_op._extra_state"] = io.BytesIO(b"te")
    return state


@pytest.fixture
def tiny():
    ours = Cosmos25ControlDiT(**parity.TINY, **parity.CONTROL, extra_image_context_dim=12)
    return ours, parity._transformer(ours, image=True, every_n=2), parity._controlnet(ours, image=True)


def test_released_transfer_file_loads_strictly_and_matches_diffusers(tmp_path, tiny):
    ours, transformer, controlnet = tiny
    state = _official_file(transformer, controlnet)
    path = str(tmp_path / "61f5694b_ema_bf16.pt")
    torch.save(state, path)
    weights = read_weights(path)
    assert weights.layout == "transfer2.5" and list(weights.branches) == [0]
    assert sorted(weights.left_out) == sorted(k for k in state if "pos_embedder" in k or "accum_" in k
                                              or k.endswith("_extra_state"))
    assert "left out 8 entries" in weights.describe() and "2 control blocks" in weights.describe()
    ours.load_state_dict(weights.net_state(), strict=True)
    assert set(weights.model_state()) == {k for k in state if k not in weights.left_out}

    # The same numbers given to diffusers under its names: the two networks agree.
    transformer.load_state_dict({k: state["net." + _official_name(k, False)] for k in transformer.state_dict()})
    controlnet.load_state_dict({
        k: state["net." + (_official_name(k, True) if not k.startswith(_CONTROLNET_COPIES) else
                           _official_name(k.replace("patch_embed_base", "patch_embed"), False))]
        for k in controlnet.state_dict()})
    ours.eval()
    x, t, text, cond, padding = parity._inputs()
    control, image = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 5, 12)
    with torch.no_grad():
        residuals = controlnet(control, x, t * 0.001, (text, image), cond, padding_mask=padding).control_block_samples
        expected = transformer(x, t * 0.001, (text, image), block_controlnet_hidden_states=residuals,
                               condition_mask=cond, padding_mask=padding).sample
        parity._close(ours(x, t, text, control, cond, padding_mask=padding, img_context_emb=image), expected)


def test_predict_file_and_bare_state_dict(tmp_path):
    base = Cosmos25DiT(**parity.TINY)
    transformer = parity._transformer(base)
    state = _official_file(transformer)
    path = str(tmp_path / "base.pt")
    torch.save({"model": state}, path)  # a wrapper, unwrapped as diffusers' get_state_dict does
    weights = read_weights(path)
    assert weights.layout == "predict2.5" and not weights.branches
    base.load_state_dict(weights.net_state(), strict=True)
    bare = {k[len("net."):]: v for k, v in state.items()}
    torch.save(bare, path)
    assert read_weights(path).layout == "bare"
    base.load_state_dict(read_weights(path).net_state(), strict=True)


def test_several_released_files_make_a_multi_control_net(tmp_path, tiny):
    """NVIDIA's multi-control: branch b from file b; no image context in the combined net by default."""
    _, transformer, controlnet = tiny
    paths = []
    for seed in range(3):
        paths.append(str(tmp_path / f"control_{seed}.pt"))
        torch.save(_official_file(transformer, controlnet, seed=seed), paths[-1])
    controls = [read_weights(p) for p in paths]
    state = multi_control_state(controls[0], controls)
    net = Cosmos25ControlDiT(**parity.TINY, **parity.CONTROL, num_control_branches=3)
    net.load_state_dict(state, strict=True)
    for b in range(3):
        assert torch.equal(getattr(net, f"control_blocks_{b}")[0].after_proj.weight,
                           controls[b].branches[0]["control_blocks.0.after_proj.weight"])
        assert torch.equal(net.control_embedder[b].proj[1].weight,
                           controls[b].branches[0]["control_embedder.proj.1.weight"])
    with_image = Cosmos25ControlDiT(**parity.TINY, **parity.CONTROL, num_control_branches=3,
                                    extra_image_context_dim=12)
    with_image.load_state_dict(multi_control_state(controls[0], controls, image_context=True), strict=True)
    with pytest.raises(ValueError, match="exactly one"):
        multi_control_state(controls[0], [read_weights_of(tmp_path, state)])


def read_weights_of(tmp_path, net_state):
    path = str(tmp_path / "multi.pt")
    torch.save({"net." + k: v for k, v in net_state.items()}, path)
    return read_weights(path)


def test_writing_back_round_trips(tmp_path):
    torch.manual_seed(0)
    single = Cosmos25ControlDiT(**parity.TINY, **parity.CONTROL)
    (name, official), = to_official(single.state_dict()).items()
    assert name == "model.pt" and all(k.startswith("net.") for k in official)
    files.save_weights_file(official, str(tmp_path / name))
    assert read_weights(str(tmp_path / name)).layout == "transfer2.5"
    for key, value in read_weights(str(tmp_path / name)).net_state().items():
        assert torch.equal(value, single.state_dict()[key])
    multi = Cosmos25ControlDiT(**parity.TINY, **parity.CONTROL, num_control_branches=2)
    written = to_official(multi.state_dict())
    assert sorted(written) == ["branch_0.pt", "branch_1.pt"]
    for b, name in enumerate(sorted(written)):  # each a released single-branch file: loads into a one-branch net
        files.save_weights_file(written[name], str(tmp_path / name))
        single.load_state_dict(read_weights(str(tmp_path / name)).net_state(), strict=True)
        branch = getattr(multi, f"control_blocks_{b}")
        assert torch.equal(single.control_blocks[1].after_proj.bias, branch[1].after_proj.bias)
    assert read_weights_of(tmp_path, multi.state_dict()).layout == "transfer2.5-multi"


def test_wrong_files_are_named(tmp_path):
    from cosmos_transfer.networks.dit import GeneralDIT

    cosmos1 = GeneralDIT(max_img_h=16, max_img_w=16, max_frames=4, in_channels=4, out_channels=4, model_channels=24,
                         num_blocks=1, num_heads=2, crossattn_emb_channels=8).state_dict()
    assert not is_cosmos_2p5(cosmos1) and is_cosmos_2p5(Cosmos25DiT(**parity.TINY).state_dict())
    path = str(tmp_path / "w.pt")
    torch.save({"net." + k: v for k, v in cosmos1.items()}, path)
    with pytest.raises(files.WeightsFileError,
                       match="not a Cosmos-2.5 network.*goes with a Transfer1 experiment.*do not mix"):
        read_weights(path)
    state = {"net." + k: v for k, v in Cosmos25DiT(**parity.TINY).state_dict().items()}
    torch.save({**state, "net.input_hint_block.0.weight": torch.zeros(2)}, path)
    with pytest.raises(files.WeightsFileError, match="input_hint_block.*do not build"):
        read_weights(path)
    torch.save([1, 2], path)
    with pytest.raises(files.WeightsFileError, match="expected a dict of tensors"):
        read_weights(path)


def test_transfer1_reader_refuses_a_2p5_file(tmp_path):
    """A 2.5 file given to the Cosmos-1.0 reader is named as such, not taken for a Cosmos-1.0 base (`net.*`)."""
    from cosmos_transfer.checkpoints import transfer1

    path = str(tmp_path / "edge_ema_bf16.pt")
    torch.save({"net." + k: v for k, v in Cosmos25ControlDiT(**parity.TINY, **parity.CONTROL).state_dict().items()},
               path)
    with pytest.raises(files.WeightsFileError,
                       match=r"Cosmos-2.5 network.*goes with a 2.5 experiment \(transfer2p5_\*.*do not mix"):
        transfer1.read_weights(path)
