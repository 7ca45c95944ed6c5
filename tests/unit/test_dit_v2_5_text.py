"""Cosmos25DiT told explicitly whether its text embeddings are raw (Reason1, crossattn_proj applied in the net) or
already projected offline (scripts/prepare_dataset.py --project-with), with a clear error for the wrong kind."""

import pytest
import torch

from cosmos_transfer.networks.dit_v2_5 import Cosmos25DiT
from cosmos_transfer.networks.dit_v2_5_control import Cosmos25ControlDiT

TINY = dict(max_img_h=16, max_img_w=16, max_frames=4, in_channels=4, out_channels=4, model_channels=32,
            num_blocks=2, num_heads=2, crossattn_emb_channels=16, use_crossattn_projection=True,
            crossattn_proj_in_channels=40, timestep_scale=0.001)


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 4, 2, 8, 8, generator=g), torch.tensor([500.0]), torch.randn(1, 6, 40, generator=g)


def test_projected_embeddings_give_the_raw_nets_output():
    torch.manual_seed(0)
    raw_net = Cosmos25DiT(**TINY).eval()
    with torch.no_grad():
        for p in raw_net.parameters():
            p.normal_(0, 0.2)
    projected_net = Cosmos25DiT(**TINY, text_embeddings_projected=True).eval()
    projected_net.load_state_dict(raw_net.state_dict(), strict=True)  # the same file loads either way
    x, t, text = _inputs()
    with torch.no_grad():
        expected = raw_net(x, t, text)
        got = projected_net(x, t, raw_net.crossattn_proj(text))  # what prepare_dataset.py caches
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not any(p.requires_grad for p in projected_net.crossattn_proj.parameters())  # applied offline: frozen
    assert all(p.requires_grad for p in raw_net.crossattn_proj.parameters())


def test_the_wrong_kind_of_text_is_named():
    x, t, text = _inputs()
    with pytest.raises(ValueError, match="16 wide, the width of crossattn_proj's output.*text_embeddings_projected=True"):
        Cosmos25DiT(**TINY)(x, t, torch.zeros(1, 6, 16))
    with pytest.raises(ValueError, match="built with text_embeddings_projected=True and takes 16-wide.*raw 40-wide"):
        Cosmos25DiT(**TINY, text_embeddings_projected=True)(x, t, text)
    with pytest.raises(ValueError, match=r"crossattn_emb must be \[B=1, L, 40\], got \(1, 6, 7\)"):
        Cosmos25DiT(**TINY)(x, t, torch.zeros(1, 6, 7))
    with pytest.raises(ValueError, match="needs use_crossattn_projection=True"):
        Cosmos25DiT(**{**TINY, "use_crossattn_projection": False}, text_embeddings_projected=True)


def test_the_control_net_takes_the_same_flag():
    net = Cosmos25ControlDiT(**TINY, vace_block_every_n=1, num_max_modalities=1, text_embeddings_projected=True)
    x, t, _ = _inputs()
    out = net(x, t, torch.zeros(1, 6, 16), torch.zeros(1, 4, 2, 8, 8))
    assert out.shape == x.shape


def test_the_2p5_experiments_take_the_flag_on_the_command_line():
    """docs/DATASETS.md's overrides for projected text compose, and build the 2B net with the projection frozen."""
    from configs.train import make_config
    from cosmos_transfer.config.compose import override
    from cosmos_transfer.config.lazy import instantiate

    config = override(make_config(), ["experiment=transfer2p5_2b_edge_posttrain",
                                      "model.net.text_embeddings_projected=True",
                                      "dataloader_train.dataset.text_embedding_folder=reason1_projected",
                                      "dataloader_train.dataset.text_embedding_dim=1024"])
    assert config.dataloader_train.dataset.text_embedding_dim == 1024
    with torch.device("meta"):
        net = instantiate(config.model.net)
    assert net.text_embeddings_projected and net.crossattn_proj[0].in_features == 100352
    assert not any(p.requires_grad for p in net.crossattn_proj.parameters())
