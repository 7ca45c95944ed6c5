"""scripts/precompute_latents.py: latents written beside the videos, read back by the dataset (use_latents=True)."""

import importlib.util
import os

import torch
from safetensors import safe_open

from cosmos_transfer.data.dataset import VideoDataset
from tests.tiny_datasets import make_tiny_dataset
from cosmos_transfer.tokenizers import PixelTokenizer
from tests.helpers import REPO_DIR

_SCRIPT = os.path.join(REPO_DIR, "scripts", "precompute_latents.py")


def _script():
    spec = importlib.util.spec_from_file_location("precompute_latents", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_precompute_then_dataset_reads_the_same_latents(tmp_path, capsys):
    root = make_tiny_dataset(tmp_path / "data", stems=("a", "b"), num_frames=12, size=(32, 48))
    script = _script()
    argv = ["--root", str(root), "--num-frames", "5", "--resolution", "32x64", "--frame-start", "2",
            "--tokenizer", "pixel", "--device", "cpu"]  # fmt: skip
    assert script.main(argv) == 0
    assert sorted(os.listdir(os.path.join(root, "latents"))) == ["a.safetensors", "b.safetensors"]
    with safe_open(os.path.join(root, "latents", "a.safetensors"), framework="pt") as file:
        meta = file.metadata()
        assert file.get_tensor("latent").shape == (48, 5, 8, 16)
    assert meta["frame_start"] == "2" and meta["num_frames"] == "5" and (meta["height"], meta["width"]) == ("32", "64")

    dataset = VideoDataset(root, num_frames=5, resolution=(32, 64), text_embedding_length=16, text_embedding_dim=8,
                           use_latents=True, hint_keys=())  # fmt: skip
    sample = dataset[0]
    expected = PixelTokenizer().encode(sample["video"].unsqueeze(0).float() / 127.5 - 1.0)[0]
    torch.testing.assert_close(sample["latent"], expected, rtol=0, atol=1e-6)  # the window the dataset decodes

    # kept unless --overwrite; a window that does not fit is listed and fails the run
    assert script.main(argv) == 0
    assert "wrote 0, kept 2" in capsys.readouterr().out
    assert script.main(argv[:3] + ["40"] + argv[4:] + ["--overwrite"]) == 1
    assert "too few for a window of 40 frames" in capsys.readouterr().out


def test_precompute_clear_errors(tmp_path, capsys):
    script = _script()
    assert script.main(["--root", str(tmp_path), "--num-frames", "5", "--resolution", "tiny"]) == 1
    assert "no videos found" in capsys.readouterr().out
    root = make_tiny_dataset(tmp_path / "data", stems=("a",))
    code = script.main(["--root", str(root), "--num-frames", "5", "--resolution", "tiny", "--tokenizer",
                        "cosmos_cv8x8x8", "--checkpoint-dir", str(tmp_path / "nowhere")])  # fmt: skip
    assert code == 1
    assert "nowhere" in capsys.readouterr().out


def test_a_missing_gpu_is_named_before_the_tokenizer_is_built(tmp_path, capsys, monkeypatch):
    # It failed late with torch's bare AssertionError ("Torch not compiled with CUDA enabled") after the tokenizer.
    from cosmos_transfer.cli import run_script

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    script = _script()
    built = []
    monkeypatch.setattr(script, "build_tokenizer", lambda *args: built.append(args))
    root = make_tiny_dataset(tmp_path / "data", stems=("a",))
    argv = ["--root", str(root), "--num-frames", "5", "--resolution", "tiny", "--device", "cuda"]
    assert run_script("precompute_latents", lambda: script.main(argv)) == 2
    error = capsys.readouterr().err
    assert "--device cuda: this machine has no usable CUDA device" in error and "--device cpu" in error
    assert built == []
