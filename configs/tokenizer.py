"""Option group `tokenizer` (package `model.tokenizer`): the frozen video tokenizer."""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.lazy_config import LazyCall as L

PIXEL_TOKENIZER = L("cosmos_transfer.tokenizers.pixel.PixelTokenizer")()


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="tokenizer", package="model.tokenizer", name="pixel", node=PIXEL_TOKENIZER)
