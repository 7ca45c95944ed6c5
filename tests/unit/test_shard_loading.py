"""Meta-device build, materialization and row-wise reading of weight files (trainer/shard_loading.py), and the
frozen-base reference of lean checkpoints (trainer/frozen_base.py), in one process. Whole models: the integration
tests test_meta_build.py, test_shard_loading_fsdp.py (two ranks) and test_lean_checkpoint.py."""

import os

import pytest
import torch
from torch import nn

from cosmos_transfer.checkpoints import files
from cosmos_transfer.config.lazy import LazyCall as L
from cosmos_transfer.tokenizers.pixel import PixelTokenizer
from cosmos_transfer.trainer import frozen_base
from cosmos_transfer.trainer.safe_dcp import DamagedCheckpointError
from cosmos_transfer.checkpoints.files import SafetensorsFile
from cosmos_transfer.trainer.shard_loading import build_on_meta, materialize, read_rows


def test_safetensors_placeholders_read_only_the_rows_asked_for(tmp_path):
    weights = {"w": torch.arange(24, dtype=torch.float32).reshape(6, 4), "s": torch.tensor(2.5)}
    files.save_weights_file(weights, str(tmp_path / "w.safetensors"))
    lazy = SafetensorsFile(str(tmp_path / "w.safetensors"))
    assert lazy["w"].is_meta and tuple(lazy["w"].shape) == (6, 4)  # nothing read yet
    assert torch.equal(read_rows(lazy["w"], (2, 5)), weights["w"][2:5])
    assert torch.equal(read_rows(lazy["w"], None), weights["w"])
    assert torch.equal(read_rows(lazy["s"], None), weights["s"])


def test_materialize_names_a_tensor_that_no_initializer_writes():
    class Precomputed(nn.Module):  # a buffer computed in __init__, with nothing that computes it again
        def __init__(self) -> None:
            super().__init__()
            # arange, not linspace: once transformers has loaded a model in this process (test_data_config's T5),
            # torch.linspace escapes `with torch.device("meta")` and the buffer would be built for real.
            self.register_buffer("table", torch.arange(8.0) / 7)
            self.linear = nn.Linear(8, 8)

    model = build_on_meta(L(Precomputed)())
    with pytest.raises(RuntimeError, match=r"no initializer wrote 1 tensor\(s\).*\['table'\]"):
        materialize(model, torch.device("cpu"), seed=0)


def test_materialize_keeps_tensors_that_were_already_real():
    class Mixed(nn.Module):
        def __init__(self, real: nn.Module) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)
            self.real = real

    real = nn.Linear(3, 3)
    with torch.no_grad():
        real.weight.fill_(7.0)
    with torch.device("meta"):
        model = Mixed(real=nn.Linear(1, 1))
    model.real = real
    materialize(model, torch.device("cpu"), seed=0)
    assert torch.all(model.real.weight == 7.0) and torch.isfinite(model.linear.weight).all()


def test_a_damaged_safetensors_file_is_named(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(files.WeightsFileError, match="bad.safetensors.*cannot be read"):
        files.load_weights_file(str(bad), "checkpoint", lazy=True)


def test_frozen_base_reference_names_a_vanished_or_changed_source(tmp_path):
    source = tmp_path / "base_model.pt"
    source.write_bytes(b"x" * 1000)
    base = frozen_base.describe(str(source), ["net.a"], True, [], False)
    frozen_base.write(str(tmp_path), base)
    assert frozen_base.read(str(tmp_path)) == base
    assert frozen_base.problem(base, "ckpt") is None
    source.write_bytes(b"x" * 999 + b"y")  # same size, other bytes
    assert "has changed since" in frozen_base.problem(base, "ckpt") and str(source) in frozen_base.problem(base, "ckpt")
    os.remove(source)
    message = frozen_base.problem(base, "ckpt")
    assert "no longer exists" in message and str(source) in message
    (tmp_path / frozen_base.FILE).write_text("{truncated")
    with pytest.raises(DamagedCheckpointError, match="frozen_base.json is damaged"):
        frozen_base.read(str(tmp_path))


def test_preflight_counts_one_shard_per_rank_when_load_path_builds_on_meta():
    from cosmos_transfer.memory import GIB, MemoryReport
    from cosmos_transfer.preflight import memory_problems

    report = MemoryReport(trainable_parameters=10**9, frozen_parameters=7 * 10**9,
                          trainable_parameter_bytes=4 * GIB, frozen_parameter_bytes=14 * GIB, gradient_bytes=4 * GIB,
                          optimizer_state_bytes=8 * GIB, buffer_bytes=0, tokenizer_bytes=0, ema_bytes=4 * GIB)
    # 8 ranks x 18 GiB of weights when each builds the whole model; 8 x 18/8 GiB when each holds its shard.
    whole = memory_problems(report, "", world_size=8, local_world_size=8, device_type="cuda", device_bytes=80 * GIB,
                            host_bytes=100 * GIB)
    assert len(whole) == 1 and "144.0 GiB of host memory to build the model on each rank" in whole[0]
    assert memory_problems(report, "", world_size=8, local_world_size=8, device_type="cuda", device_bytes=80 * GIB,
                           host_bytes=100 * GIB, sharded_build=True) == []
    tight = memory_problems(report, "", world_size=8, local_world_size=8, device_type="cuda", device_bytes=80 * GIB,
                            host_bytes=10 * GIB, sharded_build=True)
    assert len(tight) == 1 and "18.0 GiB of host memory to load each rank's shard" in tight[0]


class _StatsPixelTokenizer(PixelTokenizer):
    """The pixel tokenizer with a buffer and a parameter of its own, as the Cosmos / Wan tokenizers have (their
    latent mean/std buffers, their frozen weights)."""

    def __init__(self, **sizes) -> None:
        super().__init__(**sizes)
        self.register_buffer("latent_scale", torch.full((4,), 0.25), persistent=False)
        self.weight = nn.Parameter(torch.full((3,), 2.0), requires_grad=False)


def test_materialize_keeps_the_tokenizer_the_model_holds_outside_its_module_tree():
    """The model moves its tokenizer along in _apply (it is no submodule): to_empty must not wipe the tokenizer's
    buffers and weights, which no initializer computes again (make demo trained on NaN when it did)."""
    from configs.train import make_config
    from cosmos_transfer.config.compose import override

    config = override(make_config(), ["experiment=ctrl_tiny"]).model
    config.tokenizer = L(_StatsPixelTokenizer)(spatial_compression=4, temporal_compression=1)
    model = build_on_meta(config)
    materialize(model, torch.device("cpu"), seed=0)
    assert torch.equal(model.tokenizer.latent_scale, torch.full((4,), 0.25))
    assert torch.equal(model.tokenizer.weight, torch.full((3,), 2.0))
