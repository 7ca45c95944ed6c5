"""Every CPU-sized experiment builds its model as composed (the example experiments' tiny net took 16 channels where
their pixel tokenizer gives 48, so they failed at build time while their --dryrun composed fine)."""

import pytest

from configs.train import make_config
from cosmos_transfer.config.compose import override
from cosmos_transfer.config.experiments import build_index
from cosmos_transfer.config.lazy import instantiate

# The 7B / 2B experiments need the released tokenizer files: their builds are covered where those are stood in for.
CPU_SIZED = [name for name in build_index().names() if "_7b_" not in name and "_2b_" not in name]


@pytest.mark.parametrize("experiment", CPU_SIZED)
def test_a_cpu_sized_experiment_builds(experiment):
    model = instantiate(override(make_config(), ["--", f"experiment={experiment}"]).model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
