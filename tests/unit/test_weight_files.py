"""Every downloaded file is checked when read (issue 16 item 6): a truncated or corrupt .pt (an interrupted
base_model.pt download), a garbage .safetensors, a damaged .jit or mean_std.pt is named with what is wrong and what
to do, never a raw torch traceback."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from cosmos_transfer.checkpoints import files, transfer1
from cosmos_transfer.inference import loading
from cosmos_transfer.networks.dit import GeneralDIT
from cosmos_transfer.tokenizers import files as tokenizer_files
from cosmos_transfer.tokenizers.jit import CosmosJITTokenizer
from cosmos_transfer.trainer.checkpoint import load_model_weights
from tests.helpers import REPO_DIR as REPO

TINY = dict(max_img_h=16, max_img_w=16, max_frames=8, in_channels=4, out_channels=4, model_channels=32,
            num_blocks=1, num_heads=2, crossattn_emb_channels=8)


def truncate(path: str, keep: float = 0.5) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def official_base_file(path: str) -> None:
    state = {f"base_model.net.{k}": v for k, v in GeneralDIT(**TINY).state_dict().items()}
    torch.save(state, path)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = GeneralDIT(**TINY)


def assert_clear(message: str, path: str) -> None:
    assert path in message and "damaged or incomplete" in message and "again" in message, message
    assert "Traceback" not in message
    assert "weights_only" not in message, message  # never torch's advice to retry with weights_only=False


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_damaged_base_model_pt_is_named_by_every_reader(tmp_path, damage):
    path = str(tmp_path / "base_model.pt")
    official_base_file(path)
    if damage == "truncated":  # an interrupted download: torch says "failed finding central directory"
        truncate(path)
    elif damage == "empty":
        open(path, "wb").close()
    else:
        with open(path, "wb") as f:
            f.write(os.urandom(4096))
    with pytest.raises(files.WeightsFileError) as error:
        transfer1.read_weights(path)
    assert_clear(str(error.value), path)
    with pytest.raises(ValueError, match="damaged or incomplete"):  # checkpoint.load_path
        load_model_weights(Model(), path)
    with pytest.raises(ValueError, match="damaged or incomplete"):  # inference --checkpoint (exit 2, one line)
        loading.load_weights(Model(), path)
    # The script prints one line and exits 2 (bad input, through the scripts' one error boundary), no traceback.
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts/convert_checkpoint.py"), "to-ours", path,
                             str(tmp_path / "out.safetensors")], capture_output=True, text=True, timeout=120,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    assert result.returncode == 2
    assert_clear(result.stderr, path)


def test_a_damaged_control_file_is_named(tmp_path):
    path = str(tmp_path / "edge_control.pt")
    official_base_file(path)
    truncate(path, 0.3)
    with pytest.raises(files.WeightsFileError) as error:
        transfer1.read_control(path)
    assert_clear(str(error.value), path)


def test_a_damaged_safetensors_file_is_named(tmp_path):
    path = str(tmp_path / "ours.safetensors")
    with open(path, "wb") as f:  # a garbage header: the first 8 bytes claim a huge header
        f.write(b"\xff" * 8 + b"not json")
    with pytest.raises(files.WeightsFileError) as error:
        transfer1.read_weights(path)
    assert_clear(str(error.value), path)
    files.save_weights_file({"net.x": torch.arange(1000.0)}, path)
    truncate(path, 0.6)  # a valid header, the data cut short
    with pytest.raises(files.WeightsFileError) as error:
        load_model_weights(Model(), path)
    assert_clear(str(error.value), path)


def test_an_old_format_torch_file_still_loads(tmp_path):
    """torch.save's legacy (non-zip) format cannot be memory-mapped; it is read in full instead."""
    path = str(tmp_path / "legacy.pt")
    torch.save({"net.x": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(files.load_torch_file(path)["net.x"], torch.ones(2))


def tokenizer_folder(tmp_path) -> str:
    folder = tmp_path / "tok"
    folder.mkdir()
    module = torch.jit.script(nn.Identity())
    module.save(str(folder / "encoder.jit"))
    module.save(str(folder / "decoder.jit"))
    torch.save((torch.zeros(16), torch.ones(16)), folder / "mean_std.pt")
    return str(folder)


@pytest.mark.parametrize("name, damage", [("encoder.jit", "truncated"), ("decoder.jit", "garbage"),
                                          ("mean_std.pt", "truncated"), ("mean_std.pt", "empty")])
def test_damaged_tokenizer_files_are_named(tmp_path, name, damage):
    folder = tokenizer_folder(tmp_path)
    CosmosJITTokenizer(folder)  # the intact folder loads
    path = os.path.join(folder, name)
    if damage == "truncated":
        truncate(path)
    elif damage == "empty":
        open(path, "wb").close()
    else:
        with open(path, "wb") as f:
            f.write(os.urandom(2048))
    with pytest.raises(ValueError) as error:
        CosmosJITTokenizer(folder)
    message = str(error.value)
    assert_clear(message, path)
    assert "Cosmos-Tokenize1-CV8x8x8-720p again" in message


def test_mean_std_holding_the_wrong_thing_is_named(tmp_path):
    folder = tokenizer_folder(tmp_path)
    torch.save({"mean": torch.zeros(16)}, os.path.join(folder, "mean_std.pt"))
    with pytest.raises(ValueError, match="expected a \\(mean, std\\) pair of tensors"):
        tokenizer_files.load_mean_std(folder, 16, 2)
