"""Option group `net` (package `model.net`): the denoising network."""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.lazy_config import LazyCall as L

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


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="net", package="model.net", name="tiny", node=TINY_DIT)
