"""Context parallelism's checks, in one process: what cannot be split is refused with a one-paragraph ConfigError (a
UserError: scripts print it without a traceback) naming the setting. The split itself is tested on 2 ranks in
tests/integration/test_context_parallel.py; the same checks before building in test_preflight_context_parallel.py."""

import pytest
import torch

from cosmos_transfer.config.errors import ConfigError
from cosmos_transfer.networks.dit import GeneralDIT
from cosmos_transfer.trainer.context_parallel import ContextParallel, apply_context_parallel, build_context_parallel

ARCH = dict(max_img_h=16, max_img_w=16, max_frames=8, in_channels=4, out_channels=4, model_channels=32,
            num_blocks=1, crossattn_emb_channels=8, adaln_lora_dim=8)


class Holder(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net


def fake_group(size=2) -> ContextParallel:
    """A CP description without a process group: the checks run before any collective."""
    return ContextParallel(group=None, size=size, rank=0, dp_rank=0, dp_size=1)


def test_heads_that_do_not_split_are_refused():
    with pytest.raises(ConfigError, match="3 attention heads.*context_parallel_size=2"):
        apply_context_parallel(Holder(GeneralDIT(num_heads=3, **{**ARCH, "model_channels": 48})), fake_group())


def test_token_frames_that_do_not_split_are_refused():
    model = apply_context_parallel(Holder(GeneralDIT(num_heads=2, **ARCH)), fake_group())
    x = torch.randn(1, 4, 3, 8, 8)
    with pytest.raises(ConfigError, match="3 latent frames = 3 token frames.*context_parallel_size=2"):
        model.net(x, torch.ones(1), torch.randn(1, 5, 8))


def test_a_model_without_networks_is_refused():
    with pytest.raises(ValueError, match="no network"):
        apply_context_parallel(torch.nn.Linear(2, 2), fake_group())


def test_size_one_is_no_context_parallelism_and_hsdp_is_refused():
    assert build_context_parallel(1, torch.device("cpu")) is None
    with pytest.raises(ConfigError, match="fsdp_shard_size=2"):
        build_context_parallel(2, torch.device("cpu"), fsdp_shard_size=2)
