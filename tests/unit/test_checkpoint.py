"""Checkpoint pieces that need no process group: RNG states, key checks, export of a DCP folder, metrics file."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from cosmos_transfer.trainer.checkpoint import _check_keys, capture_rng_state, checkpoint_name, restore_rng_state
from cosmos_transfer.trainer.logging import MetricsLogger
from cosmos_transfer.trainer.trainer import DataStream, preserved_global_rng
from tests.helpers import ROOT



def _draw():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_survives_json_and_restores_every_generator():
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    _draw()
    state = json.loads(json.dumps(capture_rng_state()))
    expected = _draw()
    _draw()
    restore_rng_state(state)
    assert _draw() == expected


def test_data_loading_leaves_the_global_rng_alone():
    class Loader:  # a loader whose iteration consumes the global RNGs, as DataLoader does when an epoch starts
        def __iter__(self):
            torch.rand(3), random.random(), np.random.rand()
            return iter([1, 2])

    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    expected = _draw()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    stream = DataStream(Loader())
    assert [stream.next() for _ in range(5)] == [1, 2, 1, 2, 1]
    assert stream.epoch == 2
    assert _draw() == expected
    with preserved_global_rng():
        _draw()
    assert _draw() != expected


def test_key_check_names_missing_and_unexpected_keys():
    model_keys = ["net.a", "net.b", "net_ctrl.c"]
    assert _check_keys("f", model_keys, ["net.a", "net.b"], True, ["net_ctrl.*"]) == ["net.a", "net.b"]
    with pytest.raises(ValueError, match=r"1 missing keys \['net_ctrl.c'\].*1 unexpected keys \['other'\]"):
        _check_keys("f", model_keys, ["net.a", "net.b", "other"], True, [])
    assert _check_keys("f", model_keys, ["net.a", "other"], False, []) == ["net.a"]
    with pytest.raises(ValueError, match="none of its 1 keys match"):
        _check_keys("f", model_keys, ["x"], False, [])
    assert checkpoint_name(42) == "iter_000000042"


def test_metrics_file_drops_lines_past_the_resumed_iteration(tmp_path):
    logger = MetricsLogger(str(tmp_path), enabled=True, start_iteration=0, max_iteration=5, tensorboard=False,
                           progress_bar=False)
    for i in range(1, 6):
        logger.log(i, {"loss": 1.0 / i, "bad": float("nan")})
    logger.close()
    logger = MetricsLogger(str(tmp_path), enabled=True, start_iteration=3, max_iteration=5, tensorboard=False,
                           progress_bar=False)
    logger.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3]
    assert lines[0]["bad"] is None  # non-finite values become null: every line stays valid JSON


@pytest.mark.slow
def test_export_rejects_a_folder_that_is_not_a_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/export_checkpoint.py"), str(tmp_path), "--out", str(tmp_path / "x.safetensors")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "neither a DCP checkpoint" in result.stderr


def test_load_path_reads_an_official_style_pt_file(tmp_path):
    from cosmos_transfer.trainer.checkpoint import load_model_weights

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 2)
            self.net_ctrl = torch.nn.Linear(2, 2)

    source, target = Model(), Model()
    # Official base files: the network's keys without our "net." prefix, wrapped in {"model": ...}
    torch.save({"model": {k: v for k, v in source.net.state_dict().items()}}, tmp_path / "base.pt")
    with pytest.raises(ValueError, match="2 missing keys"):
        load_model_weights(target, str(tmp_path / "base.pt"))
    keys = load_model_weights(target, str(tmp_path / "base.pt"), allowed_missing_keys=["net_ctrl.*"])
    assert keys == ["net.bias", "net.weight"]
    assert torch.equal(target.net.weight, source.net.weight)
    assert not torch.equal(target.net_ctrl.weight, source.net_ctrl.weight)
    torch.save({"net.weight": torch.zeros(5, 5)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"net.weight has shape \(5, 5\), the model expects \(2, 3\)"):
        load_model_weights(target, str(tmp_path / "bad.pt"), strict=False)


def test_load_path_accepts_transformer_engine_extra_state(tmp_path):
    """Official files written with older Transformer Engine releases carry `_extra_state` entries stored as
    io.BytesIO: weights_only loading must accept them, and they are not weights of our model."""
    import io

    from cosmos_transfer.trainer.checkpoint import load_model_weights

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 2)

    source, target = Model(), Model()
    saved = {f"net.{k}": v for k, v in source.net.state_dict().items()}
    saved["net.attn._extra_state"] = io.BytesIO(b"te metadata")
    torch.save({"model": saved}, tmp_path / "te.pt")
    assert load_model_weights(target, str(tmp_path / "te.pt")) == ["net.bias", "net.weight"]
    assert torch.equal(target.net.weight, source.net.weight)
