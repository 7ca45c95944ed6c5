"""Option group `hint_key` (package `_global_`): which control input the control model and the datasets use.

    control_input_<key>   key in edge, vis (blur), depth, seg, keypoint

Sets `model.hint_keys` (ControlDiffusionModel) and the train/val datasets' `hint_keys`, so the batch carries
`control_input_<key>`. Joint training of several keys: set the three lists in an experiment or on the command line,
e.g. `model.hint_keys=[edge,depth] dataloader_train.dataset.hint_keys=[edge,depth] ...` (see experiments/ctrl_7b.py).
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.hints import HINT_KEYS


def hint_key_node(*keys: str) -> dict:
    """The settings of one hint-key choice (one key, or several trained jointly)."""
    keys = list(keys)
    return dict(
        model=dict(hint_keys=keys),
        dataloader_train=dict(dataset=dict(hint_keys=keys)),
        dataloader_val=dict(dataset=dict(hint_keys=keys)),
    )


def register() -> None:
    cs = ConfigStore.instance()
    for key in HINT_KEYS:
        cs.store(group="hint_key", package="_global_", name=f"control_input_{key}", node=hint_key_node(key))
