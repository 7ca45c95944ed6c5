"""Option group `net_ctrl` (package `model.net_ctrl`): the ControlNet branch (GeneralDITControl).

    tiny        1 control block over the `tiny` net (tests, demo)
    cosmos_7b   3 control blocks over the `cosmos_7b` net, hint padded to 128 channels (Cosmos-Transfer1-7B)
    cosmos_14b  the same over the `cosmos_14b` net

What the branch shares with its base, and what it does not, is explicit (SHARED_WITH_BASE, BRANCH_OWN): the shared
arguments follow `model.net` by interpolation, so `model.net.in_channels=17` (video2world) or another width reaches
the branch too; the others are the branch's own and set here.

The branch's own values are those of NVIDIA's configs. Their branch (cosmos-transfer1,
`cosmos_transfer1/diffusion/config/transfer/net_ctrl.py` FADITV2EncoderConfig, overridden per experiment by the
`net_ctrl` dicts of `config/inference/cosmos-1-diffusion-control2world.py` and
`diffusion/training/experiment/ctrl_7b_tp_121frames.py`) copies the base network's architecture config but never
sets the RoPE extrapolation ratios, which only the `net` dicts set (7B: t=2): the released branches run with the
network's defaults, 1.0 on every axis, while their base runs with t=2. NVIDIA ships no 14B control branch; ours is
built by the same rule.
The model (ControlDiffusionModel) builds one branch per hint key from this one and initializes them from the base.
"""

from hydra.core.config_store import ConfigStore

from configs.net import COSMOS_7B, COSMOS_14B, TINY_DIT
from cosmos_transfer.config.lazy import LazyCall as L
from cosmos_transfer.networks.dit_ctrl import HINT_BLOCK_CHANNELS

CONTROL_BRANCH = "cosmos_transfer.networks.dit_ctrl.GeneralDITControl"

# GeneralDIT arguments the branch takes from its base (the same weights fit both: init_from_base copies them).
# num_blocks is the base's depth, passed only to check num_control_blocks against it.
SHARED_WITH_BASE = (
    "max_img_h", "max_img_w", "max_frames", "in_channels", "out_channels", "patch_spatial", "patch_temporal",
    "concat_padding_mask", "model_channels", "num_blocks", "num_heads", "mlp_ratio", "crossattn_emb_channels",
    "use_cross_attn_mask", "use_adaln_lora", "adaln_lora_dim", "affline_emb_norm", "extra_per_block_abs_pos_emb",
    "base_fps", "attention_backend",
)
# GeneralDIT arguments the branch does not take from its base, with the branch's value (official: unset -> 1.0).
BRANCH_OWN = dict(
    rope_h_extrapolation_ratio=1.0,
    rope_w_extrapolation_ratio=1.0,
    rope_t_extrapolation_ratio=1.0,
    extra_h_extrapolation_ratio=1.0,
    extra_w_extrapolation_ratio=1.0,
    extra_t_extrapolation_ratio=1.0,
)


def branch_arguments(net_option) -> dict:
    """The branch's GeneralDIT arguments over the base option `net_option`: `${model.net.key}` for each shared
    argument the base option sets, and BRANCH_OWN. An argument in neither list is refused: decide which it is."""
    keys = [key for key in net_option if key != "_target_"]
    undecided = sorted(set(keys) - set(SHARED_WITH_BASE) - set(BRANCH_OWN))
    if undecided:
        raise ValueError(
            f"configs/net_ctrl.py: the base net sets {undecided}, which is neither in SHARED_WITH_BASE nor in "
            "BRANCH_OWN; add it to the one that matches NVIDIA's control-branch config"
        )
    shared = {key: f"${{model.net.{key}}}" for key in keys if key in SHARED_WITH_BASE}
    return {**shared, **BRANCH_OWN}


# hint_block_channels: the hint MLP's hidden widths, NVIDIA's in every option (an official control file needs them).
_HINT_MLP = dict(hint_block_channels=list(HINT_BLOCK_CHANNELS))

TINY_CTRL = L(CONTROL_BRANCH)(**branch_arguments(TINY_DIT), num_control_blocks=1, hint_channels=64, **_HINT_MLP)

COSMOS_7B_CTRL = L(CONTROL_BRANCH)(**branch_arguments(COSMOS_7B), num_control_blocks=3, hint_channels=128, **_HINT_MLP)

COSMOS_14B_CTRL = L(CONTROL_BRANCH)(**branch_arguments(COSMOS_14B), num_control_blocks=3, hint_channels=128,
                                    **_HINT_MLP)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="net_ctrl", package="model.net_ctrl", name="tiny", node=TINY_CTRL)
    cs.store(group="net_ctrl", package="model.net_ctrl", name="cosmos_7b", node=COSMOS_7B_CTRL)
    cs.store(group="net_ctrl", package="model.net_ctrl", name="cosmos_14b", node=COSMOS_14B_CTRL)
