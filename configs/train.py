"""Training config entry: `scripts/train.py --config=configs/train.py -- experiment=NAME key=value ...`.

`make_config()` returns the default Config (cosmos_transfer/config.py) and registers every option group. It imports
no experiment file: `override()` imports only the one a run asks for (cosmos_transfer/experiments.py).
"""

from configs import (
    callbacks,
    checkpoint,
    conditioner,
    data,
    ema,
    hint_key,
    lora,
    model,
    net,
    net_ctrl,
    optimizer,
    scheduler,
    tokenizer,
)
from cosmos_transfer.config.schema import Config

GROUP_MODULES = (data, optimizer, scheduler, callbacks, model, net, net_ctrl, hint_key, conditioner, tokenizer, ema,
                 lora, checkpoint)


def make_config() -> Config:
    """The default training config; registering the groups is idempotent (Hydra's ConfigStore is process-wide)."""
    config = Config()
    config.job.project = "cosmos_transfer"
    config.job.group = "debug"
    config.job.name = "default"
    for module in GROUP_MODULES:
        module.register()
    return config
