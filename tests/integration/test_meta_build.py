"""Meta-device build of whole models (trainer/shard_loading.py), one process: a control model of each family built on
the meta device, materialized and loaded from a file equals the eager build + whole-file load for every weight the
file provides; LoRA adapters on a meta-built model start as peft starts them."""

import pytest
import torch

from cosmos_transfer.checkpoints import files, transfer1
from cosmos_transfer.config.lazy import instantiate
from cosmos_transfer.networks.dit_ctrl import NEW_BRANCH_KEY_PATTERNS
from cosmos_transfer.trainer.checkpoint import load_model_weights
from cosmos_transfer.trainer.shard_loading import build_on_meta, materialize

pytestmark = pytest.mark.slow  # whole (tiny) models built and composed: tens of seconds on a loaded 2-core machine


def ctrl_tiny_model_config():
    from configs.train import make_config
    from cosmos_transfer.config.compose import override

    return override(make_config(), ["experiment=ctrl_tiny"]).model


@pytest.fixture(scope="module")
def base_files(tmp_path_factory):
    """The base of a seeded eager ctrl_tiny model, in NVIDIA's base_model.pt layout and as bf16 safetensors."""
    folder = tmp_path_factory.mktemp("base")
    torch.manual_seed(3)
    state = instantiate(ctrl_tiny_model_config()).state_dict()
    base = {k: v for k, v in state.items() if not k.startswith("net_ctrl.")}
    files.save_weights_file(transfer1.to_official(base).files["base_model.pt"], str(folder / "base_model.pt"))
    files.save_weights_file(base, str(folder / "base.safetensors"), dtype=torch.bfloat16)
    return folder, base


@pytest.mark.parametrize("name", ["base_model.pt", "base.safetensors"])
def test_meta_build_then_load_equals_the_eager_build_then_load(base_files, name):
    """Every weight the file provides is bitwise what the former path (eager build, whole-file load) gives; the
    branch's zero layers are zero; the rest is initialized (finite), the buffers as the modules compute them."""
    folder, _ = base_files
    path = str(folder / name)
    config = ctrl_tiny_model_config()
    torch.manual_seed(3)
    eager = instantiate(config)
    load_model_weights(eager, path, allowed_missing_keys=NEW_BRANCH_KEY_PATTERNS)
    model = build_on_meta(config)
    assert all(p.is_meta for p in model.parameters())
    materialize(model, torch.device("cpu"), seed=3)
    keys = load_model_weights(model, path, allowed_missing_keys=NEW_BRANCH_KEY_PATTERNS)
    expected, got = eager.state_dict(), model.state_dict()
    assert set(expected) == set(got) and len(keys) > 50
    assert [k for k in keys if not torch.equal(got[k], expected[k])] == []
    zero = [k for k in got if ".zero_blocks." in k or ".input_hint_block.14." in k]
    assert zero and all(torch.count_nonzero(got[k]) == 0 for k in zero)
    assert all(torch.isfinite(v).all() for v in got.values() if v.is_floating_point())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {n for n, p in eager.named_parameters() if p.requires_grad}
    for name_, buffer in eager.named_buffers():  # RoPE positions, the logvar head's Fourier features (from the file)
        assert torch.equal(dict(model.named_buffers())[name_], buffer), name_


def test_meta_build_of_the_2p5_family_and_of_lora_adapters(tmp_path):
    """A Cosmos-2.5 control model loads bitwise through the meta path; LoRA adapters added to a meta-built model
    are initialized as peft starts them (B zero: the adapted model starts equal to its base)."""
    from configs.train import make_config
    from cosmos_transfer.config.compose import override
    from cosmos_transfer.lora import BASE_TARGETS, LoRA

    config = override(make_config(), ["experiment=transfer2p5_tiny"]).model
    torch.manual_seed(0)
    eager = instantiate(config)
    files.save_weights_file(eager.state_dict(), str(tmp_path / "t25.safetensors"))
    model = build_on_meta(config)
    materialize(model, torch.device("cpu"), seed=0)
    keys = load_model_weights(model, str(tmp_path / "t25.safetensors"))
    expected, got = eager.state_dict(), model.state_dict()
    assert keys and [k for k in keys if not torch.equal(got[k], expected[k])] == []

    model = build_on_meta(ctrl_tiny_model_config())
    LoRA(rank=4, alpha=4, target_modules=BASE_TARGETS).apply(model)
    materialize(model, torch.device("cpu"), seed=0)
    state = model.state_dict()
    b = [k for k in state if ".lora_B." in k]
    a = [k for k in state if ".lora_A." in k]
    assert b and all(torch.count_nonzero(state[k]) == 0 for k in b)
    assert a and all(torch.isfinite(state[k]).all() and state[k].std() > 0 for k in a)
