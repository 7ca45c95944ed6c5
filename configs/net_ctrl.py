"""Option group `net_ctrl` (package `model.net_ctrl`): the ControlNet branch (GeneralDITControl).

    tiny        1 control block over the `tiny` net (tests, demo)
    cosmos_7b   3 control blocks over the `cosmos_7b` net, hint padded to 128 channels (Cosmos-Transfer1-7B)
    cosmos_14b  the same over the `cosmos_14b` net

The branch must have its base's architecture: every architecture argument here follows `model.net` by
interpolation, so `model.net.in_channels=17` (video2world) or any other change of the base reaches the branch too.
Only the control settings are the branch's own: num_control_blocks, hint_channels.
The model (ControlDiffusionModel) builds one branch per hint key from this one and initializes them from the base.
"""

from hydra.core.config_store import ConfigStore

from configs.net import COSMOS_7B, COSMOS_14B, TINY_DIT
from cosmos_transfer.lazy_config import LazyCall as L

CONTROL_BRANCH = "cosmos_transfer.networks.dit_ctrl.GeneralDITControl"


def _follow_base(net_option) -> dict:
    """`key: ${model.net.key}` for every argument the base net option sets."""
    return {key: f"${{model.net.{key}}}" for key in net_option if key != "_target_"}


TINY_CTRL = L(CONTROL_BRANCH)(**_follow_base(TINY_DIT), num_control_blocks=1, hint_channels=64)

COSMOS_7B_CTRL = L(CONTROL_BRANCH)(**_follow_base(COSMOS_7B), num_control_blocks=3, hint_channels=128)

COSMOS_14B_CTRL = L(CONTROL_BRANCH)(**_follow_base(COSMOS_14B), num_control_blocks=3, hint_channels=128)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="net_ctrl", package="model.net_ctrl", name="tiny", node=TINY_CTRL)
    cs.store(group="net_ctrl", package="model.net_ctrl", name="cosmos_7b", node=COSMOS_7B_CTRL)
    cs.store(group="net_ctrl", package="model.net_ctrl", name="cosmos_14b", node=COSMOS_14B_CTRL)
