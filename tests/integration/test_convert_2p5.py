"""scripts/convert_checkpoint.py on Cosmos-2.5 files (a subprocess per conversion, hence here): released
single-branch files combined into a joint model's file that loads strictly, written back in NVIDIA's layout, and a
released file converted as it is."""

import os
import subprocess
import sys

import pytest
import torch

from cosmos_transfer.trainer.checkpoint import load_model_weights
from tests.helpers import ROOT
from tests.unit.test_model_v2_5 import _model, _official_file, _source_model

pytestmark = pytest.mark.slow


def test_convert_checkpoint_combines_released_files_for_a_joint_model_and_writes_them_back(tmp_path):
    edge, depth = _source_model(1), _source_model(2)
    _official_file(edge.net, str(tmp_path / "edge.pt"))
    _official_file(depth.net, str(tmp_path / "depth.pt"))
    script = [sys.executable, str(ROOT / "scripts" / "convert_checkpoint.py")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = str(tmp_path / "joint.safetensors")
    result = subprocess.run(script + ["to-ours", str(tmp_path / "edge.pt"), out, "--control",
                                      f"edge={tmp_path / 'edge.pt'}", "--control", f"depth={tmp_path / 'depth.pt'}"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    joint = _model(keys=("edge", "depth"), image_context=None)
    load_model_weights(joint, out, strict=True)
    state = joint.state_dict()
    for name, value in depth.net.control_blocks[0].state_dict().items():
        if "_img" in name:  # NVIDIA's multi-control net has no image context: left out
            assert f"net.control_blocks_1.0.{name}" not in state
            continue
        assert torch.equal(state[f"net.control_blocks_1.0.{name}"], value.to(torch.bfloat16).float()), name
    assert torch.equal(state["net.blocks.0.mlp.layer1.weight"],
                       edge.net.blocks["0"].mlp.layer1.weight.to(torch.bfloat16).float())
    back = subprocess.run(script + ["to-official", out, str(tmp_path / "official")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert back.returncode == 0, back.stderr
    written = torch.load(tmp_path / "official" / "branch_1.pt", weights_only=True)
    assert torch.equal(written["net.control_blocks.0.after_proj.weight"],
                       depth.net.control_blocks[0].after_proj.weight.to(torch.bfloat16))
    single = subprocess.run(script + ["to-ours", str(tmp_path / "edge.pt"), str(tmp_path / "edge.safetensors")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert single.returncode == 0, single.stderr
    load_model_weights(_model(image_context=8), str(tmp_path / "edge.safetensors"), strict=True)
