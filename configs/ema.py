"""Option group `ema` (package `ema`): the weight average. The trainer builds it around the parallelized model
(`instantiate(config.ema, model=model)`); `ema=null` trains without one.

    power        PowerEMA (EDM2), s = 0.1 (Cosmos' setting; gamma ~ 6.94); `ema.s=0.05` changes the profile
    power_s005   PowerEMA with a shorter averaging profile, s = 0.05
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyCall as L

POWER_EMA = L("cosmos_transfer.ema.PowerEMA")(s=0.1)
POWER_EMA_S005 = L("cosmos_transfer.ema.PowerEMA")(s=0.05)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="ema", package="ema", name="power", node=POWER_EMA)
    cs.store(group="ema", package="ema", name="power_s005", node=POWER_EMA_S005)
