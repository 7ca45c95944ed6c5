"""Option group `checkpoint` (package `checkpoint`): where and how often checkpoints are saved and loaded."""

from hydra.core.config_store import ConfigStore

# Checkpoints under the job directory on the local (or shared) file system.
LOCAL = dict(save_iter=1000, keep_last_k=3, async_save=False)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="checkpoint", package="checkpoint", name="local", node=LOCAL)
