"""Two ranks (torchrun, gloo) load a weights file into a meta-built, FSDP2-sharded ctrl_tiny model; each writes what
it read and how its weights compare with the eager build + whole-file load. Launched by
tests/integration/test_shard_loading_fsdp.py:

    torchrun --nproc_per_node=2 tests/shard_loading_run.py OUT_DIR WEIGHTS_FILE...   (OUT_DIR/<file>.rank<r>.json)
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

from cosmos_transfer.config.lazy import instantiate  # noqa: E402
from cosmos_transfer.networks.dit_ctrl import NEW_BRANCH_KEY_PATTERNS  # noqa: E402
from cosmos_transfer.trainer import shard_loading  # noqa: E402
from cosmos_transfer.trainer.checkpoint import load_model_weights  # noqa: E402
from cosmos_transfer.trainer.parallelize import parallelize  # noqa: E402


def main() -> None:
    out, paths = sys.argv[1], sys.argv[2:]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    from configs.train import make_config
    from cosmos_transfer.config.compose import override

    config = override(make_config(), ["experiment=ctrl_tiny"]).model
    for path in paths:
        with open(os.path.join(out, f"{os.path.basename(path)}.rank{rank}.json"), "w", encoding="utf-8") as f:
            json.dump(compare(config, path), f)
    dist.destroy_process_group()


def compare(config, path: str) -> dict:
    torch.manual_seed(3)
    eager = instantiate(config)
    load_model_weights(eager, path, allowed_missing_keys=NEW_BRANCH_KEY_PATTERNS)

    model = shard_loading.build_on_meta(config)
    parallelize(model, device=torch.device("cpu"))
    shard_loading.materialize(model, torch.device("cpu"), seed=3)
    reads = []  # (rows read or None for a whole tensor, elements read) per tensor
    original = shard_loading.read_rows

    def recording_read_rows(source, rows):
        value = original(source, rows)
        reads.append((rows, value.numel()))
        return value

    shard_loading.read_rows = recording_read_rows
    keys = load_model_weights(model, path, allowed_missing_keys=NEW_BRANCH_KEY_PATTERNS)
    shard_loading.read_rows = original
    state = get_model_state_dict(model)
    local = {k: (v.to_local() if isinstance(v, DTensor) else v) for k, v in state.items()}
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    expected = eager.state_dict()
    return {
        "keys": len(keys),
        "sharded_keys": sum(isinstance(state[k], DTensor) for k in keys),
        "differing": [k for k in keys if not torch.equal(full[k], expected[k])],
        "elements_read": sum(n for _, n in reads),
        "local_elements": sum(local[k].numel() for k in keys),
        "whole_tensors_read_of_sharded": sum(1 for (rows, _), k in zip(reads, keys)
                                             if rows is None and isinstance(state[k], DTensor)),
        "full_elements": sum(expected[k].numel() for k in keys),
    }


if __name__ == "__main__":
    main()
