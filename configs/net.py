"""Option group `net` (package `model.net`): the denoising network, GeneralDIT.

    tiny        2 blocks x 64 channels: fast on CPU, for tests and the demo
    cosmos_7b   Cosmos-1.0 / Cosmos-Transfer1-7B base (28 blocks, 4096 channels, 32 heads; ~7.2B parameters)
    cosmos_14b  Cosmos-1.0-14B (36 blocks, 5120 channels, 40 heads)

The Cosmos-2.5 family (networks/dit_v2_5.py, dit_v2_5_control.py; values of NVIDIA's released 2.5 configs):
    tiny_2p5           Cosmos25DiT, 2 blocks x 64 channels, text 1024 wide: for tests and CPU smoke runs
    tiny_transfer_2p5  Cosmos25ControlDiT on tiny_2p5 (one control block feeding base block 0)
    predict2p5_2b      Cosmos-Predict2.5-2B (28 blocks, 2048 channels, 16 heads; ~2.06B parameters)
    predict2p5_14b     Cosmos-Predict2.5-14B (36 blocks, 5120 channels, 40 heads; ~14.4B)
    transfer2p5_2b     Cosmos-Transfer2.5-2B: the 2B base with image context (SigLIP2, 1152) and one control branch
                       of 4 blocks feeding base blocks 0, 7, 14, 21 (~2.76B, 349M of them in the branch)
The 2.5 nets add the condition-mask channel themselves (in_channels stays 16).

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


# Cosmos-2.5: settings of NVIDIA's released 2B/14B configs (transfer2/configs/vid2vid_transfer/defaults/net.py and
# experiment/exp_large_scale.py in nvidia-cosmos/cosmos-transfer2.5): Reason1 text (28 x 3584) projected to 1024,
# RoPE extrapolation (h, w, t) = (3, 3, 1) without frame-rate scaling, rectified-flow timesteps scaled by 0.001.
_COSMOS_2P5_COMMON = dict(
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
    use_crossattn_projection=True,
    crossattn_proj_in_channels=100352,
    text_embeddings_projected=False,  # True for text cached after crossattn_proj (frozen base; docs/DATASETS.md)
    use_adaln_lora=True,
    adaln_lora_dim=256,
    rope_h_extrapolation_ratio=3.0,
    rope_w_extrapolation_ratio=3.0,
    rope_t_extrapolation_ratio=1.0,
    rope_enable_fps_modulation=False,
    timestep_scale=0.001,
    attention_backend="torch",
)

TINY_DIT_2P5 = L("cosmos_transfer.networks.dit_v2_5.Cosmos25DiT")(
    max_img_h=64,
    max_img_w=64,
    max_frames=16,
    in_channels=16,
    out_channels=16,
    model_channels=64,
    num_blocks=2,
    num_heads=2,
    crossattn_emb_channels=1024,
    timestep_scale=0.001,
)

TINY_TRANSFER_2P5 = L("cosmos_transfer.networks.dit_v2_5_control.Cosmos25ControlDiT")(
    **{k: v for k, v in TINY_DIT_2P5.items() if k != "_target_"},
    vace_block_every_n=2,
)

PREDICT2P5_2B = L("cosmos_transfer.networks.dit_v2_5.Cosmos25DiT")(
    **_COSMOS_2P5_COMMON, model_channels=2048, num_blocks=28, num_heads=16
)

PREDICT2P5_14B = L("cosmos_transfer.networks.dit_v2_5.Cosmos25DiT")(
    **_COSMOS_2P5_COMMON, model_channels=5120, num_blocks=36, num_heads=40
)

TRANSFER2P5_2B = L("cosmos_transfer.networks.dit_v2_5_control.Cosmos25ControlDiT")(
    **_COSMOS_2P5_COMMON,
    model_channels=2048,
    num_blocks=28,
    num_heads=16,
    extra_image_context_dim=1152,
    vace_block_every_n=7,
    num_max_modalities=8,
    num_control_branches=1,
)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="net", package="model.net", name="tiny", node=TINY_DIT)
    cs.store(group="net", package="model.net", name="cosmos_7b", node=COSMOS_7B)
    cs.store(group="net", package="model.net", name="cosmos_14b", node=COSMOS_14B)
    cs.store(group="net", package="model.net", name="tiny_2p5", node=TINY_DIT_2P5)
    cs.store(group="net", package="model.net", name="tiny_transfer_2p5", node=TINY_TRANSFER_2P5)
    cs.store(group="net", package="model.net", name="predict2p5_2b", node=PREDICT2P5_2B)
    cs.store(group="net", package="model.net", name="predict2p5_14b", node=PREDICT2P5_14B)
    cs.store(group="net", package="model.net", name="transfer2p5_2b", node=TRANSFER2P5_2B)
