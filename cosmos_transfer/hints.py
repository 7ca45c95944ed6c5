"""Hint keys: the names of the control inputs, in one place.

A control input is named by its hint key (`edge`, `vis`, `depth`, `seg`, `keypoint`); the batch carries its video
under `control_input_<key>`, the name Cosmos-Transfer1 uses, and configs and specs may use either form.
No heavy imports here: the config layer reads this module at start-up.
"""

from __future__ import annotations

HINT_KEYS = ("edge", "vis", "depth", "seg", "keypoint")
BATCH_PREFIX = "control_input_"


def normalize_hint_key(key: str) -> str:
    """'control_input_edge' or 'edge' -> 'edge'; a ValueError naming the known keys for anything else."""
    name = key[len(BATCH_PREFIX) :] if isinstance(key, str) and key.startswith(BATCH_PREFIX) else key
    if name not in HINT_KEYS:
        raise ValueError(f"unknown hint key {key!r}; expected one of {list(HINT_KEYS)} (optionally {BATCH_PREFIX}*)")
    return name


def batch_key(key: str) -> str:
    """The batch key of a hint key's control video: 'edge' -> 'control_input_edge'."""
    return BATCH_PREFIX + normalize_hint_key(key)
