"""Official-checkpoint path: a tiny checkpoint written in the official layout converts, loads strictly, round-trips."""

import io
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from cosmos_transfer import checkpoint_convert
from cosmos_transfer.diffusion.edm import build_logvar_head
from cosmos_transfer.diffusion.model import DiffusionModel
from cosmos_transfer.networks.dit import GeneralDIT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import convert_checkpoint  # noqa: E402

TINY = dict(max_img_h=32, max_img_w=32, max_frames=8, in_channels=4, out_channels=4, model_channels=48,
            num_blocks=2, num_heads=2, crossattn_emb_channels=16, rope_t_extrapolation_ratio=2.0)


class IdentityTokenizer(nn.Module):
    """Stand-in tokenizer (only its presence matters here: it is kept out of the state dict)."""

    latent_channels, spatial_compression, temporal_compression = 4, 1, 1

    def encode(self, video):
        return video

    def decode(self, latent):
        return latent

    def latent_num_frames(self, n):
        return n


def official_file(tmp_path, wrapper=None):
    """A tiny checkpoint in the official layout: `net.*`, top-level `logvar.*`, TE `_extra_state` entries."""
    torch.manual_seed(0)
    net = GeneralDIT(**TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    state = {f"net.{k}": v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    state.update({f"logvar.{k}": v for k, v in build_logvar_head().state_dict().items()})
    state["net.blocks.block0.blocks.0.block.attn.attn_op._extra_state"] = io.BytesIO(b"fp8 meta")  # older TE
    state["net.blocks.block1.blocks.0.block.attn.attn_op._extra_state"] = torch.zeros(3, dtype=torch.uint8)
    path = str(tmp_path / "base_model.pt")
    torch.save({wrapper: state} if wrapper else state, path)
    return path, state


@pytest.mark.parametrize("wrapper", [None, "model"])
def test_official_checkpoint_converts_and_loads_strictly(tmp_path, wrapper):
    path, official = official_file(tmp_path, wrapper)
    out = str(tmp_path / "ours.safetensors")
    assert convert_checkpoint.main(["to-ours", path, out]) == 0
    weights = checkpoint_convert.load_weights_file(out)
    assert not any(k.endswith("_extra_state") for k in weights)

    # Our DiffusionModel has exactly the official names: net.* and logvar.*.
    model = DiffusionModel(GeneralDIT(**TINY), IdentityTokenizer())
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, strict=True)
    # The bare network loads its part strictly too, and computes with the official weights.
    net = GeneralDIT(**TINY)
    net.load_state_dict(checkpoint_convert.net_state_dict(weights), strict=True)
    torch.testing.assert_close(net.blocks["block1"].blocks[2].block.layer1.weight,
                               official["net.blocks.block1.blocks.2.block.layer1.weight"].float())
    x, t, text = torch.randn(1, 4, 2, 8, 8), torch.rand(1), torch.randn(1, 5, 16)
    torch.testing.assert_close(net(x, t, text), model.net(x, t, text))


def test_round_trip_back_to_official(tmp_path):
    path, official = official_file(tmp_path)
    ours, back = str(tmp_path / "ours.safetensors"), str(tmp_path / "back.pt")
    assert convert_checkpoint.main(["to-ours", path, ours]) == 0
    assert convert_checkpoint.main(["to-official", ours, back]) == 0
    restored = torch.load(back, weights_only=True)
    expected = {k: v for k, v in official.items() if not k.endswith("_extra_state")}
    assert set(restored) == set(expected)
    for key, value in expected.items():
        assert restored[key].dtype == value.dtype
        torch.testing.assert_close(restored[key], value)


def test_bare_network_state_dict_gets_the_net_prefix():
    net_state = GeneralDIT(**TINY).state_dict()
    converted = checkpoint_convert.official_to_ours({**net_state, "conditioner.dummy": torch.zeros(1)})
    assert set(converted.state_dict) == {f"net.{k}" for k in net_state}
    assert converted.dropped == ["conditioner.dummy"]


def test_dtype_cast_and_ema_selection(tmp_path):
    state = {f"net.{k}": v for k, v in GeneralDIT(**TINY).state_dict().items()}
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    path = str(tmp_path / "with_ema.pt")
    torch.save({"model": state, "ema": ema}, path)
    out = str(tmp_path / "ema.safetensors")
    assert convert_checkpoint.main(["to-ours", path, out, "--ema", "--dtype", "bfloat16"]) == 0
    weights = checkpoint_convert.load_weights_file(out)
    key = "net.final_layer.linear.weight"
    assert weights[key].dtype == torch.bfloat16
    torch.testing.assert_close(weights[key], ema[key].to(torch.bfloat16))


def test_bad_files_give_clear_errors(tmp_path, capsys):
    assert convert_checkpoint.main(["to-ours", str(tmp_path / "missing.pt"), str(tmp_path / "o.safetensors")]) == 1
    assert "does not exist" in capsys.readouterr().err
    path = str(tmp_path / "not_a_model.pt")
    torch.save({"optimizer.step": torch.zeros(1)}, path)
    assert convert_checkpoint.main(["to-ours", path, str(tmp_path / "o.safetensors")]) == 1
    assert "no network weights" in capsys.readouterr().err
    torch.save({"net.x": torch.zeros(1)}, path)
    assert convert_checkpoint.main(["to-ours", path, str(tmp_path / "o.bin")]) == 1
    assert ".safetensors or .pt" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no 'ema' state dict"):
        checkpoint_convert.load_official(path, use_ema=True)


def test_pickled_objects_are_refused(tmp_path):
    path = str(tmp_path / "evil.pt")
    torch.save({"net.x": torch.zeros(1), "payload": subprocess.Popen}, path)
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        checkpoint_convert.load_official(path)
