"""Lean checkpoints: the frozen base is not saved with each checkpoint but referenced, and read again from its source.

A control post-training freezes a base network that `checkpoint.load_path` provides (13.5 GB for the 7B). Its
checkpoints hold what changes (the trainable weights, their optimizer state and EMA, buffers, the trainer state) and
`frozen_base.json`, which names where the rest comes from:

    {"path": "/abs/base_model.pt", "size": 14400000000, "crc32": "89abcdef", "keys": ["net.blocks...", ...],
     "strict": true, "allowed_missing_keys": ["net_ctrl.*.x_embedder2.*", ...], "use_ema": false}

`keys` are the frozen parameters the source provided (left out of the checkpoint); strict / allowed_missing_keys /
use_ema are how it was read, so that reading it again gives the same weights. Before a checkpoint is resumed, exported
or loaded, the source must still be there with the same size and CRC-32 (for a DCP folder: of all its files); if it
changed or vanished the error names the path. Frozen parameters that the source did not provide are saved as usual.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from cosmos_transfer.trainer import safe_dcp

FILE = "frozen_base.json"


class FrozenBaseError(safe_dcp.CheckpointError):
    """The source of a lean checkpoint's frozen base vanished or changed (the message names its path)."""


@dataclass
class FrozenBase:
    path: str
    size: int
    crc32: str
    keys: list[str] = field(default_factory=list)
    strict: bool = True
    allowed_missing_keys: list[str] = field(default_factory=list)
    use_ema: bool = False


def source_problem(path: str) -> str | None:
    """Why `path` cannot be a frozen base's source, found without opening anything: it must be a regular file or a
    DCP checkpoint folder (a FIFO would block the reader forever, a device never end)."""
    kind = safe_dcp.not_regular(path)
    if kind is None:
        return None
    metadata = os.path.join(path, safe_dcp.METADATA_FILE)
    if kind == "a folder" and os.path.isfile(metadata):  # (isfile: a regular file, or a link to one)
        return None
    return (f"{path} is {kind}, not a regular file (a weights file) or a DCP checkpoint folder: refusing to open it"
            + (" (it has no regular .metadata)" if kind == "a folder" else ""))


def fingerprint(path: str) -> tuple[int, str]:
    """(bytes, CRC-32) of a weights file, or of every file of a DCP folder (their checksums, in name order). Anything
    else (a FIFO, a device, another folder) is refused unopened: FrozenBaseError."""
    problem = source_problem(path)
    if problem is not None:
        raise FrozenBaseError(problem)
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))
        sums = safe_dcp.checksums(path, names)
        text = json.dumps(sums, sort_keys=True).encode("utf-8")
        return sum(s["size"] for s in sums.values()), f"{zlib.crc32(text) & 0xFFFFFFFF:08x}"
    info = safe_dcp.file_checksum(path)
    return info["size"], info["crc32"]


def stat_signature(path: str) -> list[tuple[str, int, int, int, int]]:
    """(name, device, inode, size, mtime) of a weights file, or of each file of a DCP folder: what changes when the
    source is replaced or written to (compared before and after reading it, to find a change in between)."""
    names = sorted(os.listdir(path)) if os.path.isdir(path) else [""]
    signature = []
    for name in names:
        info = os.stat(os.path.join(path, name) if name else path)
        signature.append((name, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))
    return signature


def describe(path: str, keys: list[str], strict: bool, allowed_missing_keys: list[str], use_ema: bool) -> FrozenBase:
    size, crc = fingerprint(path)
    return FrozenBase(os.path.abspath(path), size, crc, sorted(keys), bool(strict), list(allowed_missing_keys),
                      bool(use_ema))


def write(folder: str, base: FrozenBase) -> None:
    with open(os.path.join(folder, FILE), "w", encoding="utf-8") as f:
        json.dump(asdict(base), f, indent=1)


def read(folder: str) -> FrozenBase | None:
    """The reference of checkpoint `folder`, None for a checkpoint that holds all its weights."""
    file = os.path.join(folder, FILE)
    if not os.path.isfile(file):
        return None
    try:
        with open(file, encoding="utf-8") as f:
            value: Any = json.load(f)
        base = FrozenBase(**value)
    except (ValueError, TypeError, UnicodeDecodeError) as error:
        raise safe_dcp.DamagedCheckpointError(f"{file} is damaged: not a frozen-base reference ({error})") from None
    if not isinstance(base.path, str) or not isinstance(base.size, int) or not isinstance(base.keys, list):
        raise safe_dcp.DamagedCheckpointError(f"{file} is damaged: path, size or keys of the wrong type")
    return base


def problem(base: FrozenBase, checkpoint: str) -> str | None:
    """Why the source of `checkpoint`'s frozen base cannot be used (None: it is the one it was saved with)."""
    what = (f"checkpoint {checkpoint} holds no copy of its frozen base ({len(base.keys)} tensors): they are read from "
            f"{base.path}, ")
    if not os.path.exists(base.path):
        return what + ("which no longer exists. Put that file back (the same bytes) at that path, or export the "
                       "checkpoint on a machine where it is (scripts/export_checkpoint.py)")
    problem = source_problem(base.path)
    if problem is not None:
        return what + problem
    size, crc = fingerprint(base.path)
    if size != base.size or crc != base.crc32:
        return what + (f"which has changed since ({size} bytes, CRC-32 {crc}; saved with {base.size} bytes, CRC-32 "
                       f"{base.crc32}). Resuming on another base would change the model: restore the original file")
    return None
