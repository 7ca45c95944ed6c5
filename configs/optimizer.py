"""Option group `optimizer` (package `optimizer`). The trainer passes `params=` at call time."""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.lazy_config import LazyCall as L

ADAMW = L("torch.optim.AdamW")(lr=5e-5, weight_decay=0.1, betas=[0.9, 0.99], eps=1e-10)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="optimizer", package="optimizer", name="adamw", node=ADAMW)
