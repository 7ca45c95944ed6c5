"""Option group `hint_key` (package `_global_`): which control input the model and the datasets use."""

from hydra.core.config_store import ConfigStore

HINT_KEYS = ("edge", "vis", "depth", "seg", "keypoint")


def _hint_key_node(key: str) -> dict:
    return dict(
        model=dict(hint_key=f"control_input_{key}"),
        dataloader_train=dict(dataset=dict(hint_keys=[key])),
    )


def register() -> None:
    cs = ConfigStore.instance()
    for key in HINT_KEYS:
        cs.store(group="hint_key", package="_global_", name=f"control_input_{key}", node=_hint_key_node(key))
