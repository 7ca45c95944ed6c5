"""Memory accounting: the frozen base costs no gradient or optimizer bytes; the 7B control model on the meta device."""

import pytest
import torch
from torch import nn

from cosmos_transfer.memory import model_memory, model_memory_from_config
from tests.unit.test_ctrl import make_model


def _bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def test_frozen_base_contributes_no_gradient_or_optimizer_bytes():
    model = make_model()
    report = model_memory(model)
    base_bytes = _bytes(model.net.parameters())
    branch = model.net_ctrl["edge"]
    unused_bytes = _bytes(branch.final_layer.parameters())  # official name only, frozen
    trainable_bytes = _bytes(model.trainable_parameters())
    assert report.frozen_parameter_bytes == base_bytes + unused_bytes
    assert report.trainable_parameter_bytes == trainable_bytes
    assert report.gradient_bytes == trainable_bytes  # nothing for the base
    assert report.optimizer_state_bytes == 2 * trainable_bytes  # AdamW: exp_avg + exp_avg_sq, nothing for the base
    assert report.tokenizer_bytes == _bytes(model.tokenizer.parameters())
    assert report.total_bytes == sum(v for k, v in report.as_dict().items() if k.endswith("_bytes") and k != "total_bytes")

    finetuned = model_memory(make_model(finetune_base=True))
    assert finetuned.frozen_parameter_bytes == unused_bytes
    assert finetuned.gradient_bytes == trainable_bytes + base_bytes


def test_bf16_base_is_stored_once_at_two_bytes_per_weight():
    model = make_model(base_dtype="bfloat16")
    report = model_memory(model, ema=True)
    base_params = sum(p.numel() for p in model.net.parameters())
    unused = sum(p.numel() for p in model.net_ctrl["edge"].final_layer.parameters())
    assert report.frozen_parameter_bytes == 2 * base_params + 4 * unused
    assert report.ema_bytes == 4 * report.trainable_parameters
    assert "frozen parameters" in report.to_markdown()


def test_optimizer_and_gradient_dtypes():
    layer = nn.Linear(4, 4, bias=False)
    report = model_memory(layer, optimizer_states=1, gradient_dtype=torch.bfloat16)
    assert (report.trainable_parameter_bytes, report.gradient_bytes, report.optimizer_state_bytes) == (64, 32, 64)
    with pytest.raises(ValueError, match="optimizer_states"):
        model_memory(layer, optimizer_states=-1)


class ShapeOnlyTokenizer(nn.Module):
    """What the model needs of the Cosmos CV8x8x8 tokenizer to be built (its own weights are not counted)."""

    latent_channels, spatial_compression, temporal_compression = 16, 8, 8

    def encode(self, video):
        raise RuntimeError("shape-only tokenizer")

    decode = encode

    def latent_num_frames(self, n):
        return (n - 1) // 8 + 1


def test_7b_control_experiment_builds_on_meta_and_accounts_memory():
    from configs.train import make_config
    from cosmos_transfer.config.compose import override

    config = override(make_config(), ["--", "experiment=ctrl_7b_edge_posttrain"])
    report = model_memory_from_config(config.model, ema=config.ema is not None, tokenizer=ShapeOnlyTokenizer())
    assert report.ema_bytes == 4 * report.trainable_parameters  # the experiment trains with an EMA (group ema)
    # Base: ~7.2B weights in bf16, frozen; branch: 3 of 28 blocks + embedders + zero layers, ~0.9B fp32 trainable.
    assert 7.1e9 < report.frozen_parameters < 7.4e9
    assert 0.8e9 < report.trainable_parameters < 1.0e9
    assert report.gradient_bytes == report.optimizer_state_bytes // 2 == 4 * report.trainable_parameters
    assert report.frozen_parameter_bytes < 2.1 * report.frozen_parameters  # bf16 (+ the branch's unused fp32 head)
    # Persistent state (without activations) fits one 80 GB GPU with room for activations.
    assert report.total_bytes < 40 * 1024**3
    print("\n" + report.to_markdown("ctrl_7b_edge_posttrain"))


def test_memory_cli_prints_the_table(capsys):
    from cosmos_transfer.memory import main

    assert main(["experiment=ctrl_tiny"]) == 0
    out = capsys.readouterr().out
    assert "| ctrl_tiny | parameters | GiB |" in out and "optimizer state" in out
    assert main(["experiment=ctrl_tiny", "model.hint_keys=[]"]) == 1
    assert "hint_keys" in capsys.readouterr().err
