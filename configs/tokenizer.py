"""Option group `tokenizer` (package `model.tokenizer`): the frozen video tokenizer.

    pixel      PixelTokenizer: 4x4 pixel patches folded into 48 channels, every frame kept (17 x 64 x 64 video ->
               48 x 17 x 16 x 16 latent); no weights, exact inverse. The net needs in/out_channels=48.
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.lazy_config import LazyCall as L

PIXEL_TOKENIZER = L("cosmos_transfer.tokenizers.pixel.PixelTokenizer")(
    spatial_compression=4,
    temporal_compression=1,
)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="tokenizer", package="model.tokenizer", name="pixel", node=PIXEL_TOKENIZER)
