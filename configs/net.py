"""Option group `net` (package `model.net`): the denoising network, GeneralDIT.

    tiny        2 blocks x 64 channels: fast on CPU, for tests and the demo
    cosmos_7b   Cosmos-1.0 / Cosmos-Transfer1-7B base (28 blocks, 4096 channels, 32 heads; ~7.2B parameters)
    cosmos_14b  Cosmos-1.0-14B (36 blocks, 5120 channels, 40 heads)

video2world nets take one more input channel: `model.net.in_channels=17`. `model.net.attention_backend=te` uses
Transformer Engine kernels when it is installed (same weights).
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyCall as L

# Settings shared by the official Cosmos-1.0 networks (values of their released configs).
_COSMOS_COMMON = dict(
    max_img_h=240,
    max_img_w=240,
    max_frames=128,
    in_channels=16,
    out_channels=16,
    patch_spatial=2,
    patch_temporal=1,
    concat_padding_mask=True,
    mlp_ratio=4.0,
    crossattn_emb_channels=1024,
    use_cross_attn_mask=False,
    use_adaln_lora=True,
    adaln_lora_dim=256,
    affline_emb_norm=True,
    extra_per_block_abs_pos_emb=True,
    attention_backend="torch",
)

# A few-block network for tests and CPU smoke runs.
TINY_DIT = L("cosmos_transfer.networks.dit.GeneralDIT")(
    max_img_h=64,
    max_img_w=64,
    max_frames=16,
    in_channels=16,
    out_channels=16,
    patch_spatial=2,
    patch_temporal=1,
    model_channels=64,
    num_blocks=2,
    num_heads=2,
    mlp_ratio=4.0,
    crossattn_emb_channels=1024,
)

COSMOS_7B = L("cosmos_transfer.networks.dit.GeneralDIT")(
    **_COSMOS_COMMON,
    model_channels=4096,
    num_blocks=28,
    num_heads=32,
    rope_h_extrapolation_ratio=1.0,
    rope_w_extrapolation_ratio=1.0,
    rope_t_extrapolation_ratio=2.0,
)

COSMOS_14B = L("cosmos_transfer.networks.dit.GeneralDIT")(
    **_COSMOS_COMMON,
    model_channels=5120,
    num_blocks=36,
    num_heads=40,
    rope_h_extrapolation_ratio=2.0,
    rope_w_extrapolation_ratio=2.0,
    rope_t_extrapolation_ratio=2.0,
)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="net", package="model.net", name="tiny", node=TINY_DIT)
    cs.store(group="net", package="model.net", name="cosmos_7b", node=COSMOS_7B)
    cs.store(group="net", package="model.net", name="cosmos_14b", node=COSMOS_14B)
