"""Option group `callbacks` (package `trainer.callbacks`): name -> LazyDict of a training callback."""

from hydra.core.config_store import ConfigStore


def register() -> None:
    cs = ConfigStore.instance()
    # No extra callbacks: progress, grad clipping, NaN guard and metrics are built into the trainer.
    cs.store(group="callbacks", package="trainer.callbacks", name="basic", node={})
