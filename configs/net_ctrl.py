"""Option group `net_ctrl` (package `model.net_ctrl`): the ControlNet branch."""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.lazy_config import LazyCall as L

# Control branch of the tiny network: the first block(s) of the same DiT plus hint embedding and zero projections.
TINY_CTRL = L("cosmos_transfer.networks.dit_ctrl.GeneralDITControl")(
    num_control_blocks=1,
    hint_channels=32,
)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="net_ctrl", package="model.net_ctrl", name="tiny", node=TINY_CTRL)
