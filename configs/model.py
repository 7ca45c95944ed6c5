"""Option group `model` (package `model`): the training model. Its net, tokenizer, conditioner and ema come from
their own groups (packages model.net, model.tokenizer, ...), merged after this one in the defaults list."""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.lazy_config import LazyCall as L

DIFFUSION = L("cosmos_transfer.diffusion.model.DiffusionModel")(net=None, tokenizer=None, conditioner=None)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="model", package="model", name="diffusion", node=DIFFUSION)
