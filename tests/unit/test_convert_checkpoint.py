"""Official weight files: every layout NVIDIA ships (written here in that layout, at tiny size) is recognized, named,
and loads through each entry point (convert_checkpoint.py to-ours, checkpoint.load_path, inference's --checkpoint /
--control_checkpoint); wrong files get clear errors; ours -> official -> ours is bitwise.

Layout facts (nvidia-cosmos/cosmos-transfer1), per test: see cosmos_transfer/checkpoints/transfer1.py LAYOUTS."""

import io
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from cosmos_transfer.checkpoints import files, transfer1
from cosmos_transfer.diffusion.conditioner import VideoConditioner
from cosmos_transfer.diffusion.edm import build_logvar_head
from cosmos_transfer.diffusion.model import DiffusionModel
from cosmos_transfer.diffusion.model_ctrl import ControlDiffusionModel
from cosmos_transfer.inference import loading
from cosmos_transfer.networks.dit import GeneralDIT
from cosmos_transfer.networks.dit_ctrl import NEW_BRANCH_KEY_PATTERNS, GeneralDITControl
from cosmos_transfer.trainer.checkpoint import load_model_weights
from tests.helpers import REPO_DIR as REPO

sys.path.insert(0, os.path.join(REPO, "scripts"))
import convert_checkpoint  # noqa: E402

TINY = dict(max_img_h=16, max_img_w=16, max_frames=8, in_channels=4, out_channels=4, model_channels=32,
            num_heads=2, crossattn_emb_channels=8, adaln_lora_dim=8)
NUM_BLOCKS, CONTROL_BLOCKS, HINT = 3, 2, 8


class Tokenizer(nn.Module):
    """Stand-in tokenizer (kept out of the state dict; only its sizes matter)."""

    latent_channels, spatial_compression, temporal_compression = 4, 1, 1

    def encode(self, video):
        return video

    def decode(self, latent):
        return latent

    def latent_num_frames(self, n):
        return n


def random_(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def base_model(seed=0) -> DiffusionModel:
    torch.manual_seed(seed)
    return random_(DiffusionModel(GeneralDIT(num_blocks=NUM_BLOCKS, **TINY), Tokenizer()), seed)


def control_model(keys=("edge",), seed=0, finetune_base=False) -> ControlDiffusionModel:
    torch.manual_seed(seed)
    branch = GeneralDITControl(num_control_blocks=CONTROL_BLOCKS, hint_channels=HINT, num_blocks=NUM_BLOCKS, **TINY)
    model = ControlDiffusionModel(GeneralDIT(num_blocks=NUM_BLOCKS, **TINY), Tokenizer(), VideoConditioner(),
                                  net_ctrl=branch, hint_keys=keys, finetune_base=finetune_base)
    return random_(model, seed)


def state_of(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def official_base(model_state: dict) -> dict:
    """Cosmos-Transfer1-7B base_model.pt: the base under `base_model.` (read by inference_utils.py
    load_network_model into the control model, whose base is `base_model`; model_ctrl.py load_base_model strips
    the prefix), with Transformer Engine `_extra_state` entries (skipped by non_strict_load_model)."""
    out = {f"base_model.{k}": v for k, v in model_state.items() if k.startswith(("net.", "logvar."))}
    out["base_model.net.blocks.block0.blocks.0.block.attn.attn_op._extra_state"] = io.BytesIO(b"fp8 meta")
    return out


def official_control(model_state: dict, key: str) -> dict:
    """<key>_control.pt: the branch as net.* (GeneralDITEncoder names: x_embedder2, input_hint_block, zero_blocks)
    and the control model's logvar.* (convert_ckpt_tp_to_fsdp.py *_ema_model_only.pt; world_generation_pipeline.py
    _load_network loads it into the control model non-strictly)."""
    prefix = f"net_ctrl.{key}."
    out = {"net." + k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}
    out.update({k: v for k, v in model_state.items() if k.startswith("logvar.")})
    out["net.blocks.block1.blocks.0.block.attn.attn_op._extra_state"] = torch.zeros(3, dtype=torch.uint8)
    return out


def assert_same(model: nn.Module, expected: dict) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


# -------------------------------------------------------------------------------------------- base-model layouts
def base_layouts(state: dict) -> dict:
    net = {k: v for k, v in state.items() if k.startswith(("net.", "logvar."))}
    buffers = ("pos_embedder.seq", "logvar.0.freqs", "logvar.0.phases")  # absent from NVIDIA's EMA copies
    ema = {k.replace(".", "-"): v for k, v in net.items() if not k.endswith(buffers)}
    model = {k: v if k.endswith(buffers) else v * 0 for k, v in net.items()}
    return {
        "base_model": official_base(state),
        "net": net,  # Cosmos-1.0 base files, the Sample-AV base: net.* + logvar.*
        "bare": {k[len("net."):]: v for k, v in net.items() if k.startswith("net.")},  # no prefix (no logvar)
        # A training checkpoint iter_*.pt (utils/checkpointer.py save: model=model.state_dict(), optimizer, ...;
        # training/models/model_image.py state_dict: {"model", "ema"}; EMA names spell "." as "-").
        "training": {"model": {"model": model, "ema": ema},
                     "optimizer": {"state": {}, "param_groups": []}, "iteration": 100},
    }


@pytest.mark.parametrize("layout", ["base_model", "net", "bare", "training"])
def test_every_base_layout_loads_through_every_entry_point(tmp_path, layout):
    source = state_of(base_model(seed=1))
    path = str(tmp_path / f"{layout}.pt")
    torch.save(base_layouts(source)[layout], path)
    expected = dict(source)
    ema = layout == "training"  # the EMA copy holds the weights (the 'model' copy is zeros here)
    if layout == "bare":  # a bare network has no uncertainty head: the model keeps its own
        expected.update({k: v for k, v in base_model(seed=2).state_dict().items() if k.startswith("logvar.")})

    found = transfer1.read_weights(path, use_ema=ema)
    assert found.layout == ("net" if layout == "training" else layout) and found.has_base and not found.branches
    assert path in found.describe()
    if layout == "base_model":
        assert found.left_out == ["base_model.net.blocks.block0.blocks.0.block.attn.attn_op._extra_state"]
    if layout == "training":
        assert {"optimizer", "iteration", "model"} <= set(found.left_out)
        assert any("buffers" in note for note in found.notes)  # EMA lacks pos_embedder.seq, logvar.0.* (as NVIDIA's)

    # 1. scripts/convert_checkpoint.py to-ours
    out = str(tmp_path / "ours.safetensors")
    args = ["to-ours", path, out] + (["--ema"] if ema else [])
    assert convert_checkpoint.main(args) == 0
    target = base_model(seed=2)
    target.load_state_dict(files.load_weights_file(out), strict=layout != "bare")
    assert_same(target, expected)
    # 2. checkpoint.load_path (the trainer), straight from the official file
    target = base_model(seed=2)
    lines = []
    load_model_weights(target, path, use_ema=ema, report=lines.append,
                       allowed_missing_keys=["logvar.*"] if layout == "bare" else [])
    assert_same(target, expected)
    assert lines and path in lines[0]
    # 3. inference --checkpoint
    target = base_model(seed=2)
    if layout != "bare" and layout != "training":
        loading.load_weights(target, path)
        assert_same(target, expected)


def test_base_model_pt_starts_new_branches_through_load_path(tmp_path):
    """checkpoint.load_path=base_model.pt into a control model: the branches start from the base's weights, as
    NVIDIA's control net starts (training/models/model_ctrl.py build_model: the branch loads the base's state dict
    non-strictly); their own layers must be allowed missing, and the error says so."""
    source = state_of(base_model(seed=1))
    path = str(tmp_path / "base_model.pt")
    torch.save(official_base(source), path)
    target = control_model(seed=3)
    with pytest.raises(ValueError, match="no trained layers of the branches \\['edge'\\].*allowed_missing_keys"):
        load_model_weights(target, path)
    lines = []
    load_model_weights(target, path, allowed_missing_keys=list(NEW_BRANCH_KEY_PATTERNS), report=lines.append)
    assert "branches ['edge'] started from its base" in lines[0]
    state = target.state_dict()
    for key, value in source.items():
        assert torch.equal(state[key], value)
    assert torch.equal(state["net_ctrl.edge.blocks.block1.blocks.2.block.layer1.weight"],
                       source["net.blocks.block1.blocks.2.block.layer1.weight"])
    assert torch.equal(state["net_ctrl.edge.t_embedder.1.linear_1.weight"], source["net.t_embedder.1.linear_1.weight"])


# ------------------------------------------------------------------------------------------------ control layouts
def control_layouts(state: dict) -> dict:
    base, control = official_base(state), official_control(state, "edge")
    distilled = {f"net.base_model.{k}": v for k, v in state.items() if k.startswith("net.")}
    distilled.update({"net.net_ctrl." + k[len("net_ctrl.edge."):]: v for k, v in state.items()
                      if k.startswith("net_ctrl.edge.")})
    distilled.update({k: v for k, v in state.items() if k.startswith("logvar.")})
    return {
        # distillation/scripts/combine_base_ctrl_ckpt.py: combined = {**base_state_dict, **control_state_dict}
        "base+control": {**base, **control},
        # world_generation_pipeline.py DistilledControl2WorldGenerationPipeline._load_network: checkpoint.get("model")
        # split by net.base_model.net.* / net.net_ctrl.*
        "distilled": {"model": distilled},
    }


@pytest.mark.parametrize("layout", ["base+control", "distilled"])
def test_combined_base_and_control_files_load(tmp_path, layout):
    source = state_of(control_model(seed=1))
    path = str(tmp_path / "edge_control.pt")
    torch.save(control_layouts(source)[layout], path)
    found = transfer1.read_weights(path)
    assert found.layout == layout and found.has_base and found.official_branch is not None

    out = str(tmp_path / "ours.safetensors")
    assert convert_checkpoint.main(["to-ours", path, out]) == 2  # which hint key? (the file does not say)
    assert convert_checkpoint.main(["to-ours", path, out, "--control-key", "edge"]) == 0
    target = control_model(seed=2)
    target.load_state_dict(files.load_weights_file(out), strict=True)
    assert_same(target, source)
    target = control_model(seed=2)
    load_model_weights(target, path)  # the model's one branch takes the file's branch
    assert_same(target, source)
    target = control_model(seed=2)
    loading.load_weights(target, path)
    assert_same(target, source)


def test_base_and_control_files_through_every_entry_point(tmp_path):
    source = state_of(control_model(keys=("edge", "depth"), seed=1))
    base, edge, depth = (str(tmp_path / name) for name in ("base_model.pt", "edge_control.pt", "depth_control.pt"))
    torch.save(official_base(source), base)
    torch.save(official_control(source, "edge"), edge)
    torch.save({"model": official_control(source, "depth")}, depth)
    assert transfer1.read_weights(edge).layout == "control"

    out = str(tmp_path / "ours.safetensors")
    assert convert_checkpoint.main(["to-ours", base, out, "--control", f"edge={edge}", "--control",
                                    f"depth={depth}"]) == 0
    target = control_model(keys=("edge", "depth"), seed=2)
    target.load_state_dict(files.load_weights_file(out), strict=True)
    assert_same(target, source)
    target = control_model(keys=("edge", "depth"), seed=2)
    lines = []
    loading.load_weights(target, base, control_checkpoints={"edge": edge, "depth": depth}, report=lines.append)
    assert_same(target, source)
    assert [line.split(":")[0] for line in lines] == [base, edge, depth]
    assert "base_model.pt: the base as base_model.net.*" in lines[0] and "control branch" in lines[1]


def test_wrong_kind_of_file_is_named(tmp_path, capsys):
    source = state_of(control_model(seed=1))
    base, edge = str(tmp_path / "base_model.pt"), str(tmp_path / "edge_control.pt")
    torch.save(official_base(source), base)
    torch.save(official_control(source, "edge"), edge)
    out = str(tmp_path / "o.safetensors")
    # A branch-only file where a base is needed.
    assert convert_checkpoint.main(["to-ours", edge, out]) == 2
    assert "holds only a control branch" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds only a control branch.*needs its base too"):
        load_model_weights(control_model(seed=2), edge)
    with pytest.raises(ValueError, match="holds only a control branch"):
        loading.load_weights(control_model(seed=2), edge)
    # A base file where a branch is needed.
    assert convert_checkpoint.main(["to-ours", base, out, "--control", f"edge={base}"]) == 2
    assert "given as a control-branch file, but it holds the base only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="given as a control-branch file, but it holds the base only"):
        loading.load_weights(control_model(seed=2), base, control_checkpoints={"edge": base})
    with pytest.raises(ValueError, match="no trained layers of the branches \\['edge'\\].*--control_checkpoint"):
        loading.load_weights(control_model(seed=2), base)  # a control model from a base file alone
    # A control file into a model without branches.
    with pytest.raises(ValueError, match="holds a control branch.*the model has no branch"):
        load_model_weights(base_model(), edge)
    with pytest.raises(ValueError, match="model has no 'depth' branch"):
        loading.load_control_file(control_model(seed=2), "depth", edge)


def test_unknown_layout_lists_its_keys_and_the_layouts_expected(tmp_path, capsys):
    path = str(tmp_path / "other.pt")
    torch.save({"encoder.layer.0.weight": torch.zeros(2), "decoder.bias": torch.zeros(1)}, path)
    with pytest.raises(files.WeightsFileError) as error:
        transfer1.read_weights(path)
    message = str(error.value)
    assert "its first keys are ['encoder.layer.0.weight', 'decoder.bias']" in message
    for name in transfer1.LAYOUTS:
        assert f"  {name}: " in message
    assert convert_checkpoint.main(["to-ours", path, str(tmp_path / "o.safetensors")]) == 2
    assert "Expected one of" in capsys.readouterr().err
    torch.save({"optimizer": {"state": {}}, "iteration": 3}, path)
    with pytest.raises(files.WeightsFileError, match="expected a dict of tensors"):
        transfer1.read_weights(path)
    shard = str(tmp_path / "iter_000000100_model_mp_0.pt")
    torch.save({"model": {"net.x": torch.zeros(1)}, "ema": None}, shard)
    with pytest.raises(files.WeightsFileError, match="tensor-parallel shard.*convert_ckpt_tp_to_fsdp.py"):
        transfer1.read_weights(shard)


# ------------------------------------------------------------------------------------------------------- to-official
def test_round_trip_ours_official_ours_is_bitwise(tmp_path, capsys):
    model = control_model(keys=("edge", "depth"), seed=4, finetune_base=True)
    model.net_ctrl["depth"].to(torch.bfloat16)  # dtypes are kept as they are
    source = state_of(model)
    ours = str(tmp_path / "ctrl.safetensors")
    files.save_weights_file(source, ours)
    official = tmp_path / "official"
    assert convert_checkpoint.main(["to-official", ours, str(official), "--finetune-base"]) == 0
    printed = capsys.readouterr().out
    assert sorted(os.listdir(official)) == ["base_model.pt", "depth_control.pt", "edge_control.pt"]
    assert printed.count("wrote ") == 3
    # The files are in NVIDIA's layouts: what its loaders expect.
    written_base = torch.load(official / "base_model.pt", weights_only=True)
    assert all(k.startswith(("base_model.net.", "base_model.logvar.")) for k in written_base)
    assert transfer1.read_weights(str(official / "edge_control.pt")).layout == "control"

    back = str(tmp_path / "back.safetensors")
    assert convert_checkpoint.main(["to-ours", str(official / "base_model.pt"), back, "--control",
                                    f"edge={official / 'edge_control.pt'}", "--control",
                                    f"depth={official / 'depth_control.pt'}"]) == 0
    restored = files.load_weights_file(back)
    assert set(restored) == set(source)
    for key, value in source.items():
        assert restored[key].dtype == value.dtype and torch.equal(restored[key], value), key

    # Without --finetune-base the base (NVIDIA's base_model.pt, unchanged when frozen) is left out, and said so.
    frozen = tmp_path / "frozen"
    assert convert_checkpoint.main(["to-official", ours, str(frozen)]) == 0
    assert sorted(os.listdir(frozen)) == ["depth_control.pt", "edge_control.pt"]
    assert "left out the base" in capsys.readouterr().out
    # One branch into one file; several files into one .pt is refused.
    assert convert_checkpoint.main(["to-official", ours, str(tmp_path / "e.pt"), "--control-key", "edge"]) == 0
    assert torch.equal(torch.load(tmp_path / "e.pt", weights_only=True)["net.x_embedder2.proj.1.weight"],
                       source["net_ctrl.edge.x_embedder2.proj.1.weight"])
    assert convert_checkpoint.main(["to-official", ours, str(tmp_path / "all.pt")]) == 2
    assert "give a folder" in capsys.readouterr().err


def test_plain_model_round_trip_and_dtype(tmp_path):
    source = state_of(base_model(seed=5))
    ours, back, again = (str(tmp_path / n) for n in ("ours.safetensors", "base_model.pt", "again.safetensors"))
    files.save_weights_file(source, ours)
    assert convert_checkpoint.main(["to-official", ours, back]) == 0
    assert transfer1.read_weights(back).layout == "base_model"
    assert convert_checkpoint.main(["to-ours", back, again, "--dtype", "bfloat16"]) == 0
    restored = files.load_weights_file(again)
    assert set(restored) == set(source)
    for key, value in source.items():
        expected = value.to(torch.bfloat16) if value.is_floating_point() else value
        assert torch.equal(restored[key], expected)


def test_ema_selection_and_pickled_objects(tmp_path):
    state = {k: v for k, v in base_model().state_dict().items()}
    ema = {k: v + 1 for k, v in state.items()}
    path = str(tmp_path / "with_ema.pt")
    torch.save({"model": state, "ema": ema}, path)
    plain = transfer1.read_weights(path)
    assert torch.equal(plain.base["net.final_layer.linear.weight"], state["net.final_layer.linear.weight"])
    assert any("also holds EMA weights" in note for note in plain.notes)
    taken = transfer1.read_weights(path, use_ema=True)
    assert torch.equal(taken.base["net.final_layer.linear.weight"], ema["net.final_layer.linear.weight"])
    torch.save(state, path)
    with pytest.raises(files.WeightsFileError, match="no 'ema' state dict"):
        transfer1.read_weights(path, use_ema=True)
    evil = str(tmp_path / "evil.pt")
    torch.save({"net.x": torch.zeros(1), "payload": subprocess.Popen}, evil)
    with pytest.raises(files.WeightsFileError, match="can run code it carries, so it is refused"):
        transfer1.read_weights(evil)
