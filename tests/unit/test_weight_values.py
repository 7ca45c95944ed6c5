"""Numbers that enter (issue 25 items 1 and 4): a weights file holding NaN or inf is refused by every reader with a
message naming the file and its first bad tensor (it used to give an all-black video and exit 0), and a .pt file
that torch's weights_only refuses is refused without torch's advice to retry with weights_only=False."""

import os

import pytest
import torch
from torch import nn

from cosmos_transfer.checkpoints import files, transfer1, transfer2_5
from cosmos_transfer.inference import loading
from cosmos_transfer.networks.dit import GeneralDIT
from cosmos_transfer.trainer.checkpoint import load_model_weights

TINY = dict(max_img_h=16, max_img_w=16, max_frames=8, in_channels=4, out_channels=4, model_channels=32,
            num_blocks=1, num_heads=2, crossattn_emb_channels=8)
BAD_KEY = "net.blocks.block0.blocks.0.block.attn.to_q.0.weight"


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = GeneralDIT(**TINY)


def _with_bad_values(state: dict, key: str, values=(float("nan"), float("inf"), float("nan"))) -> dict:
    state = {k: v.clone() for k, v in state.items()}
    state[key].view(-1)[: len(values)] = torch.tensor(values)
    return state


def assert_names_the_bad_tensor(message: str, path: str, key: str, nan: int = 2, inf: int = 1) -> None:
    assert path in message and f"'{key}'" in message, message
    assert f"holds {nan + inf} non-finite values ({nan} NaN, {inf} inf)" in message, message
    assert "all-black video" in message


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_weights_file_with_nan_is_refused_by_every_reader(tmp_path, suffix):
    path = str(tmp_path / f"weights{suffix}")
    files.save_weights_file(_with_bad_values(Model().state_dict(), BAD_KEY), path)
    readers = {
        "read_weights": lambda: transfer1.read_weights(path),
        "read_weights lazy": lambda: transfer1.read_weights(path, lazy=True),
        "checkpoint.load_path": lambda: load_model_weights(Model(), path),  # lazy: each rank reads its rows
        "inference --checkpoint": lambda: loading.load_weights(Model(), path),
    }
    for name, read in readers.items():
        with pytest.raises(files.WeightsFileError) as error:
            read()
        assert_names_the_bad_tensor(str(error.value), path, BAD_KEY)


def test_an_official_container_names_the_bad_tensor_inside_it(tmp_path):
    """NVIDIA's Transfer1 files wrap the state ({"model": ..., "ema": ...}); the name says where in the container."""
    path = str(tmp_path / "base_model.pt")
    state = {f"base_model.{k}": v for k, v in Model().state_dict().items()}
    torch.save({"model": state, "ema": _with_bad_values(state, "base_model.net.x_embedder.proj.1.weight")}, path)
    with pytest.raises(files.WeightsFileError) as error:
        transfer1.read_weights(path)
    assert_names_the_bad_tensor(str(error.value), path, "ema.base_model.net.x_embedder.proj.1.weight")


def test_a_cosmos_2p5_file_with_inf_is_refused_but_can_be_recognized(tmp_path):
    path = str(tmp_path / "edge_ema_bf16.pt")
    state = {"net.t_embedding_norm.weight": torch.ones(8, dtype=torch.bfloat16),
             "net.blocks.0.self_attn.q_proj.weight": torch.ones(8, 8, dtype=torch.bfloat16)}
    state["net.blocks.0.self_attn.q_proj.weight"][3, :2] = float("-inf")
    torch.save(state, path)
    assert transfer2_5.is_2p5_file(path)  # the layout sniff reads names only
    with pytest.raises(files.WeightsFileError) as error:
        transfer2_5.read_weights(path)
    assert_names_the_bad_tensor(str(error.value), path, "net.blocks.0.self_attn.q_proj.weight", nan=0, inf=2)


def test_tokenizer_statistics_with_nan_are_refused(tmp_path):
    path = str(tmp_path / "mean_std.pt")
    torch.save((torch.zeros(16), torch.tensor([float("nan")] * 2 + [1.0] * 14)), path)
    with pytest.raises(files.WeightsFileError, match=r"tensor '1' \(16,\) holds 2 non-finite values \(2 NaN, 0 inf\)"):
        files.load_torch_file(path, "tokenizer statistics file")


def test_non_finite_count_is_exact_where_a_sum_overflows():
    """The check sums chunks (memory speed); a sum that overflows on finite values falls back to counting."""
    large = torch.full((4096,), 60000.0, dtype=torch.float16)  # finite values whose fp16 sum is inf
    assert not torch.isfinite(large.sum()) and files.non_finite_count(large) == 0
    large[[5, 4000]] = torch.tensor([float("inf"), float("nan")], dtype=torch.float16)
    assert files.non_finite_count(large) == 2
    spread = torch.zeros(3 * (1 << 20) + 7)  # several chunks, bad values in the last one
    spread[-1] = float("nan")
    assert files.non_finite_count(spread) == 1 and files.non_finite_count(spread.to(torch.bfloat16)) == 1
    assert files.non_finite_count(torch.arange(10)) == 0  # integers are always finite


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pt_that_would_run_code_is_refused_without_advising_weights_only_false(tmp_path, legacy):
    path = str(tmp_path / "untrusted.pt")
    torch.save({"net.x": torch.ones(2), "hook": _RunsCode()}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(files.WeightsFileError) as error:
        transfer1.read_weights(path)
    message = str(error.value)
    print(message)
    assert path in message and "can run code" in message and "was not opened" in message
    assert "getcwd" in message  # what it asks to call
    assert "weights_only=False" not in message and "`weights_only` set to `False`" not in message
    assert ".safetensors" in message  # what to do instead


def test_a_non_safetensors_file_is_named(tmp_path):
    path = str(tmp_path / "model.safetensors")
    torch.save({"net.x": torch.ones(2)}, path)  # a torch file under a safetensors name
    for lazy in (False, True):
        with pytest.raises(files.WeightsFileError, match="damaged or incomplete") as error:
            files.load_weights_file(path, lazy=lazy)
        assert path in str(error.value)


# ----------------------------------------------------------------------------------------------------------------------
# Control weights given in a batch (the form prepare_control_weights takes: numbers, 0-d tensors, maps)


@pytest.mark.parametrize("weights, message", [
    ([1.0, float("nan")], "the weight of control 1 is nan"),
    (torch.tensor([float("inf"), 0.5]), "the weight of control 0 is inf"),
    (float("-inf"), "the weight of control 0 is -inf"),
    ([1.0, torch.full((1, 1, 4, 8, 8), float("nan"))], r"the map of control 1 \(1, 1, 4, 8, 8\) holds 256 NaN or inf"),
])
def test_non_finite_control_weights_in_a_batch_are_refused(weights, message):
    from cosmos_transfer.config.errors import DataError
    from cosmos_transfer.networks.dit_ctrl import prepare_control_weights

    with pytest.raises(DataError, match=message):
        prepare_control_weights(weights, 2, 1, (2, 4, 4), latent_frames=2)
    assert prepare_control_weights([1.0, 0.5], 2, 1, (2, 4, 4)).isfinite().all()


def test_containers_nested_past_the_recursion_limit_are_walked(tmp_path):
    """A hostile file may nest containers deeper than Python's recursion limit; the walk keeps its own stack."""
    nested: object = torch.tensor([float("nan")])
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(files.WeightsFileError, match=r"tensor 'deep\.0\.0\.[0.]*\.\.\.[0.]*' \(1,\) holds 1 non-finite"):
        files.check_finite({"deep": nested, "ok": torch.ones(1)}, "deep.pt")
