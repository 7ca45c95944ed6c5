"""Option group `conditioner` (package `model.conditioner`): batch -> network conditions (text, fps, masks).

    video       text embeddings + mask, fps, image size, padding mask; text dropped with probability 0.2 in
                training (classifier-free guidance), as Cosmos
    video_nocfg the same without text dropout (for models sampled without guidance)
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyCall as L

VIDEO_CONDITIONER = L("cosmos_transfer.diffusion.conditioner.VideoConditioner")(
    text_dropout_rate=0.2, use_fps=True, use_image_size=True, use_padding_mask=True
)

VIDEO_CONDITIONER_NO_CFG = L("cosmos_transfer.diffusion.conditioner.VideoConditioner")(
    text_dropout_rate=0.0, use_fps=True, use_image_size=True, use_padding_mask=True
)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="conditioner", package="model.conditioner", name="video", node=VIDEO_CONDITIONER)
    cs.store(group="conditioner", package="model.conditioner", name="video_nocfg", node=VIDEO_CONDITIONER_NO_CFG)
