"""Option group `conditioner` (package `model.conditioner`): batch -> network conditions (text, fps, masks)."""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.lazy_config import LazyCall as L

VIDEO_CONDITIONER = L("cosmos_transfer.diffusion.conditioner.VideoConditioner")(text_dropout_rate=0.2)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="conditioner", package="model.conditioner", name="video", node=VIDEO_CONDITIONER)
