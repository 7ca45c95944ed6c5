"""Option group `ema` (package `model.ema`). The trainer builds it around the parallelized model (`model=`)."""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.lazy_config import LazyCall as L

POWER_EMA = L("cosmos_transfer.ema.PowerEMA")(s=0.1)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="ema", package="model.ema", name="power", node=POWER_EMA)
