"""LoRA configuration and weight maths (cosmos_transfer/lora.py) without peft: which layers the patterns name in
both families, the error for a pattern that names nothing, merging and splitting adapter weights, the config group."""

import json
import os

import pytest
import torch
from torch import nn

import configs.net as configs_net
from cosmos_transfer import lora
from cosmos_transfer.checkpoints.files import WeightsFileError
from cosmos_transfer.config.errors import ConfigError
from cosmos_transfer.config.lazy import instantiate


def _model(**networks) -> nn.Module:
    """A module holding the given networks (built on the meta device: names only, no memory)."""
    model = nn.Module()
    with torch.device("meta"):
        for name, config in networks.items():
            setattr(model, name, instantiate(config))
    return model


def _layer_kinds(names):
    return sorted({name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1] if name.endswith(".0") else
                   name.rsplit(".", 1)[-1] for name in names})


def test_base_patterns_name_attention_and_mlp_of_every_block_in_both_families():
    transfer1 = _model(net=configs_net.TINY_DIT)
    names = lora.LoRA(target_modules=lora.BASE_TARGETS).targets(transfer1)
    assert _layer_kinds(names) == ["layer1", "layer2", "to_k.0", "to_out.0", "to_q.0", "to_v.0"]
    blocks = len(transfer1.net.blocks)
    # each Transfer1 block: self-attention and cross-attention (4 projections each) and one MLP (2 layers)
    assert len(names) == blocks * (4 + 4 + 2)
    assert not any("adaLN" in n or "embedder" in n or "final_layer" in n for n in names)

    predict = _model(net=configs_net.TINY_DIT_2P5)
    names = lora.LoRA(target_modules=lora.BASE_TARGETS).targets(predict)
    assert _layer_kinds(names) == ["k_proj", "layer1", "layer2", "output_proj", "q_proj", "v_proj"]
    assert len(names) == len(predict.net.blocks) * (4 + 4 + 2)
    assert all(n.startswith("net.blocks.") for n in names)


def _ctrl_tiny_on_meta() -> nn.Module:
    from configs.train import make_config
    from cosmos_transfer.config.compose import override

    with torch.device("meta"):
        return instantiate(override(make_config(), ["--", "experiment=ctrl_tiny"]).model)


def test_control_patterns_name_only_the_branches():
    transfer1 = _ctrl_tiny_on_meta()
    names = lora.LoRA(target_modules=lora.CONTROL_TARGETS).targets(transfer1)
    assert names and all(n.startswith("net_ctrl.edge.blocks.") for n in names)

    transfer2p5 = _model(net=configs_net.TINY_TRANSFER_2P5)
    names = lora.LoRA(target_modules=lora.CONTROL_TARGETS).targets(transfer2p5)
    assert names and all(n.startswith("net.control_blocks") for n in names)
    assert _layer_kinds(names) == ["k_proj", "layer1", "layer2", "output_proj", "q_proj", "v_proj"]


def test_a_pattern_that_matches_nothing_is_a_config_error_naming_it():
    model = _model(net=configs_net.TINY_DIT_2P5)
    pattern = r"net\.blocks\..*\.to_q\.0"  # Transfer1's name on a 2.5 network
    expected = r"lora\.target_modules: the pattern 'net\\\\.blocks.*to_q.*matches no nn\.Linear"
    with pytest.raises(ConfigError, match=expected):
        lora.LoRA(target_modules=[lora.BASE_TARGETS[0], pattern]).targets(model)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rank=0), "lora.rank must be a positive integer"),
    (dict(alpha=0.0), "lora.alpha must be positive"),
    (dict(dropout=1.0), r"lora.dropout must be in \[0, 1\)"),
    (dict(target_modules=[]), "lora.target_modules is empty"),
    (dict(target_modules="q_proj"), "must be lists of regular expressions"),
    (dict(target_modules=["net.(blocks"]), r"'net.\(blocks' is not a regular expression"),
])
def test_bad_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        lora.LoRA(**kwargs)


def test_merge_folds_the_scaled_low_rank_update_into_the_base_weight():
    torch.manual_seed(0)
    weight, a, b = torch.randn(6, 5), torch.randn(2, 5), torch.randn(6, 2)
    weights = {"net.l.base_layer.weight": weight, "net.l.lora_A.default.weight": a, "net.l.lora_B.default.weight": b,
               "logvar.weight": torch.ones(1)}
    merged = lora.merge_weights(weights, scaling=0.5)
    assert sorted(merged) == ["logvar.weight", "net.l.weight"]
    x = torch.randn(3, 5)
    adapted = x @ weight.T + 0.5 * (x @ a.T) @ b.T  # what peft's layer computes
    assert torch.allclose(x @ merged["net.l.weight"].T, adapted, atol=1e-6)

    base, adapters = lora.split_weights(weights)
    assert sorted(base) == ["logvar.weight", "net.l.weight"] and torch.equal(base["net.l.weight"], weight)
    assert sorted(adapters) == ["net.l.lora_A.default.weight", "net.l.lora_B.default.weight"]
    with pytest.raises(ValueError, match="without their pair"):
        lora.merge_weights({k: v for k, v in weights.items() if "lora_B" not in k}, scaling=1.0)


def test_adapter_file_round_trip_and_merge_into_a_plain_layer(tmp_path):
    torch.manual_seed(0)
    model = nn.Module()
    model.net = nn.Sequential(nn.Linear(5, 6, bias=False))
    weight = model.net[0].weight.detach().clone()
    a, b = torch.randn(2, 5), torch.randn(6, 2)
    path = str(tmp_path / "adapters.lora.safetensors")
    settings = lora.LoRA(rank=2, alpha=3.0, target_modules=[r"net\.0"]).settings()
    lora.save_adapters(path, {"net.0.lora_A.default.weight": a, "net.0.lora_B.default.weight": b}, settings)
    assert lora.read_adapters(path)[1] == settings
    assert lora.merge_adapter_file(model, path) == ["net.0"]
    assert torch.allclose(model.net[0].weight, weight + 1.5 * b @ a, atol=1e-6)

    not_adapters = str(tmp_path / "plain.safetensors")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, not_adapters)
    with pytest.raises(ValueError, match="not a LoRA adapter file"):
        lora.merge_adapter_file(model, not_adapters)


def test_the_lora_group_composes_and_is_off_by_default():
    from configs.train import make_config
    from cosmos_transfer.config.compose import override

    assert override(make_config(), ["--", "experiment=ctrl_tiny"]).lora is None
    config = override(make_config(), ["--", "experiment=ctrl_tiny", "lora=control", "lora.rank=8"])
    built = instantiate(config.lora)
    assert (built.rank, built.alpha, built.scaling) == (8, 32.0, 4.0)
    assert built.target_modules == list(lora.CONTROL_TARGETS) and built.trainable == list(lora.CONTROL_TRAINABLE)
    base = instantiate(override(make_config(), ["--", "experiment=ctrl_tiny", "lora=base"]).lora)
    assert (base.rank, base.alpha) == (32, 32.0)  # Cosmos-Predict2.5's recipe


# ----------------------------------------------------------------------------------------------------------------------
# Adapter files that do not fit (issue 25 item 3): refused naming the file, the layer and what was expected


def _adapter_file(tmp_path, a, b, settings=None, metadata=None) -> str:
    from safetensors.torch import save_file

    path = str(tmp_path / "adapters.lora.safetensors")
    if metadata is None:
        metadata = {"lora": json.dumps(settings if settings is not None else {"rank": 2, "alpha": 3.0})}
    save_file({"net.0.lora_A.default.weight": a, "net.0.lora_B.default.weight": b}, path, metadata=metadata)
    return path


def _plain_model() -> nn.Module:
    model = nn.Module()
    model.net = nn.Sequential(nn.Linear(5, 6, bias=False))
    return model


@pytest.mark.parametrize("a_shape, b_shape", [
    ((2, 1), (6, 2)),  # lora_A [rank, 1] broadcast over the layer's 5 inputs
    ((2, 5), (1, 2)),  # lora_B [1, rank] broadcast over its 6 outputs
    ((2, 4), (6, 2)),  # another model's width
    ((3, 5), (6, 3)),  # a rank other than the file's settings say
])
def test_adapters_of_another_shape_are_refused_naming_the_layer_and_both_shapes(tmp_path, a_shape, b_shape):
    model = _plain_model()
    before = model.net[0].weight.detach().clone()
    path = _adapter_file(tmp_path, torch.ones(a_shape), torch.ones(b_shape))
    with pytest.raises(WeightsFileError) as error:
        lora.merge_adapter_file(model, path)
    message = str(error.value)
    assert path in message and "net.0" in message, message
    assert f"lora_A {a_shape}" in message and f"lora_B {b_shape}" in message and "(6, 5)" in message, message
    assert torch.equal(model.net[0].weight, before)  # nothing merged
    weights = {"net.0.base_layer.weight": before, "net.0.lora_A.default.weight": torch.ones(a_shape),
               "net.0.lora_B.default.weight": torch.ones(b_shape)}
    if a_shape[0] == b_shape[1] == 3:
        return  # a consistent rank: only the file's settings tell it is wrong
    with pytest.raises(WeightsFileError, match=r"the adapters of net\.0 do not fit it"):  # export's merge
        lora.merge_weights(weights, scaling=1.0, where="checkpoint iter_10")


@pytest.mark.parametrize("metadata, message", [
    ({"lora": json.dumps({"rank": 0, "alpha": 32.0})}, "rank must be a positive integer, got 0"),
    ({"lora": json.dumps({"rank": 2.5, "alpha": 32.0})}, "rank must be a positive integer, got 2.5"),
    ({"lora": json.dumps({"rank": 2, "alpha": float("nan")})}, "alpha must be a positive finite number, got nan"),
    ({"lora": json.dumps({"alpha": 32.0})}, r"lack \['rank'\]"),
    ({"lora": json.dumps([2, 32.0])}, "must be a JSON object"),
    ({"lora": "rank=2 alpha=32"}, "its 'lora' metadata is not JSON"),
    ({"lora": "[" * 100_000 + "]" * 100_000}, "its 'lora' metadata is not JSON"),
    ({"format": "pt"}, "is not a LoRA adapter file"),
])
def test_unusable_adapter_settings_are_one_paragraph_naming_the_file(tmp_path, metadata, message):
    path = _adapter_file(tmp_path, torch.ones(2, 5), torch.ones(6, 2), metadata=metadata)
    with pytest.raises(WeightsFileError, match=message) as error:
        lora.merge_adapter_file(_plain_model(), path)
    assert path in str(error.value)


def test_adapters_with_nan_or_a_damaged_file_are_refused(tmp_path):
    b = torch.ones(6, 2)
    b[1, 1] = float("nan")
    path = _adapter_file(tmp_path, torch.ones(2, 5), b)
    with pytest.raises(WeightsFileError, match=r"'net\.0\.lora_B\.default\.weight' \(6, 2\) holds 1 non-finite") as e:
        lora.merge_adapter_file(_plain_model(), path)
    assert path in str(e.value)
    with open(path, "r+b") as file:  # truncated: safetensors' SafetensorError
        file.truncate(os.path.getsize(path) - 8)
    with pytest.raises(WeightsFileError, match="damaged or incomplete"):
        lora.read_adapters(path)


def test_lora_without_peft_is_one_paragraph(monkeypatch):
    """A missing peft was a bare ImportError, a traceback from train.py; now the config error names the extra."""
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(ConfigError, match=r"needs the peft package.*pip install -e '\.\[lora\]'"):
        lora.LoRA(target_modules=["proj"]).apply(nn.Sequential())
