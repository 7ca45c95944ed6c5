"""Two ranks (torchrun, gloo) read only their own rows of a weights file into a meta-built, FSDP2-sharded control
model, and end with the weights of the eager build + whole-file load (tests/shard_loading_run.py)."""

import json
import subprocess
import sys

import pytest
import torch

from cosmos_transfer.checkpoints import files, transfer1
from cosmos_transfer.config.lazy import instantiate
from tests.helpers import ROOT, subprocess_env


@pytest.mark.slow
def test_each_rank_reads_only_its_rows_and_gets_the_eager_weights(tmp_path):
    from configs.train import make_config
    from cosmos_transfer.config.compose import override

    torch.manual_seed(3)
    state = instantiate(override(make_config(), ["experiment=ctrl_tiny"]).model).state_dict()
    base = {k: v for k, v in state.items() if not k.startswith("net_ctrl.")}
    # NVIDIA's layout (torch.save, memory-mapped when read) and ours in bf16 (safe_open / get_slice)
    files.save_weights_file(transfer1.to_official(base).files["base_model.pt"], str(tmp_path / "base_model.pt"))
    files.save_weights_file(base, str(tmp_path / "base.safetensors"), dtype=torch.bfloat16)
    names = ["base_model.pt", "base.safetensors"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "tests" / "shard_loading_run.py"), str(tmp_path), *(str(tmp_path / n) for n in names)]
    run = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    for name in names:
        check(name, [json.loads((tmp_path / f"{name}.rank{r}.json").read_text()) for r in range(2)])


def check(name: str, results: list[dict]) -> None:
    for result in results:
        assert result["differing"] == [], name
        assert result["sharded_keys"] > 40  # the networks' parameters are DTensors: rows were asked for
        assert result["whole_tensors_read_of_sharded"] == 0
        assert result["elements_read"] == result["local_elements"]  # exactly this rank's rows, nothing more
    # the two ranks together read each sharded tensor once (replicated ones, e.g. logvar, by both)
    assert results[0]["elements_read"] + results[1]["elements_read"] < 1.05 * results[0]["full_elements"]
