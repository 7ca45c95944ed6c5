"""Option group `optimizer` (package `optimizer`). The trainer passes `params=` at call time.

On CUDA the trainer adds `fused=True` to AdamW unless the option sets `fused` itself (one kernel for all parameters,
what Cosmos' FusedAdamW gives). Values as Cosmos-Transfer1 post-training: lr 5e-5, weight decay 0.1, betas
(0.9, 0.99), eps 1e-10.
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyCall as L

ADAMW = L("torch.optim.AdamW")(lr=5e-5, weight_decay=0.1, betas=[0.9, 0.99], eps=1e-10)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="optimizer", package="optimizer", name="adamw", node=ADAMW)
    cs.store(group="optimizer", package="optimizer", name="fusedadamw", node=ADAMW)  # Cosmos' option name
