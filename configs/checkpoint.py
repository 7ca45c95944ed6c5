"""Option group `checkpoint` (package `checkpoint`): where and how often checkpoints are saved and loaded.

Checkpoints go to `<job dir>/checkpoints/iter_{N:09d}/` (torch.distributed.checkpoint shards plus each rank's trainer
state); rerunning the same job resumes from `latest_checkpoint.txt`. See cosmos_transfer/trainer/checkpoint.py.
"""

from hydra.core.config_store import ConfigStore

LOCAL = dict(save_iter=1000, keep_last_k=3, async_save=False)
# Writes in a background thread while training continues (dcp.async_save); published once complete.
LOCAL_ASYNC = dict(save_iter=1000, keep_last_k=3, async_save=True)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="checkpoint", package="checkpoint", name="local", node=LOCAL)
    cs.store(group="checkpoint", package="checkpoint", name="local_async", node=LOCAL_ASYNC)
