"""Option group `scheduler` (package `scheduler`). The trainer passes `optimizer=` at call time."""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyCall as L

CONSTANT = L("cosmos_transfer.trainer.schedulers.constant")()
# Cosmos' linear warm-up: the lr multiplier goes from f_start to f_max in warm_up_steps, then towards f_min.
LAMBDA_LINEAR = L("cosmos_transfer.trainer.schedulers.lambda_linear")(
    warm_up_steps=[2500],
    f_start=[1.0e-6],
    f_max=[1.0],
    f_min=[1.0],
    cycle_lengths=[10_000_000_000_000],
)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="scheduler", package="scheduler", name="constant", node=CONSTANT)
    cs.store(group="scheduler", package="scheduler", name="lambdalinear", node=LAMBDA_LINEAR)
