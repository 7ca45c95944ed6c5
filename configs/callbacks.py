"""Option group `callbacks` (package `trainer.callbacks`): name -> LazyDict of a training callback.

Progress bar, gradient clipping, the NaN guard and metrics are built into the trainer; callbacks add the rest
(see cosmos_transfer/trainer/callbacks.py for the hooks).
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyCall as L

# One plain line every 10 iterations (iteration, loss, mse, lr, grad norm, step time): readable in batch-job logs.
LOSS_LINE = {"loss_line": L("cosmos_transfer.trainer.callbacks.LossLine")(every=10)}


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="callbacks", package="trainer.callbacks", name="basic", node={})
    cs.store(group="callbacks", package="trainer.callbacks", name="loss_line", node=LOSS_LINE)
