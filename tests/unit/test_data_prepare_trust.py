"""prepare_dataset.py and the caption reader on hostile or careless input (issue 25): a caption with a lone
surrogate, deeply nested caption JSON, a Reason1 encoder that is not there, --device cuda without CUDA."""

import json
import os

import pytest

from cosmos_transfer.config.errors import DataError
from cosmos_transfer.data.captions import read_caption
from tests.helpers import REPO_DIR
from tests.tiny_datasets import make_tiny_dataset, to_transfer2_5_layout


def _prepare_dataset_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("prepare_dataset", os.path.join(REPO_DIR, "scripts",
                                                                                  "prepare_dataset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _write_raw(path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def test_a_caption_with_a_lone_surrogate_or_deep_nesting_is_a_data_error_naming_the_file(tmp_path):
    surrogate = tmp_path / "surrogate.json"
    _write_raw(surrogate, '{"caption": "a red square \\ud800 moves"}')  # valid JSON, not encodable as UTF-8
    with pytest.raises(DataError, match=f"caption file {surrogate}.*lone surrogate"):
        read_caption(str(surrogate))
    nested = tmp_path / "nested.json"
    _write_raw(nested, "[" * 200_000 + "]" * 200_000)
    with pytest.raises(DataError, match=f"caption file {nested} is nested too deeply"):
        read_caption(str(nested))


def test_one_bad_caption_is_reported_and_the_rest_of_the_folder_embedded(tmp_path, capsys):
    """One lone surrogate used to abort the embedding of the whole folder with a traceback."""
    root = to_transfer2_5_layout(make_tiny_dataset(tmp_path / "data", stems=["a", "b", "c", "d"]))
    _write_raw(os.path.join(root, "captions", "b.json"), '{"caption": "a red square \\ud800 moves"}')
    _write_raw(os.path.join(root, "captions", "c.json"), "[" * 200_000 + "]" * 200_000)
    main = _prepare_dataset_main()
    assert main([root, "--text_encoder", "minilm", "--num-frames", "5", "--resolution", "32x48", "--quick"]) == 1
    out = capsys.readouterr().out
    assert f"BAD {os.path.join(root, 'videos', 'b.mp4')}: caption file {os.path.join(root, 'captions', 'b.json')}" \
        in out
    assert f"BAD {os.path.join(root, 'videos', 'c.mp4')}: caption file {os.path.join(root, 'captions', 'c.json')}" \
        f" is nested too deeply" in out
    assert sorted(os.listdir(os.path.join(root, "minilm_l6"))) == ["a.safetensors", "d.safetensors"]
    assert "2 of 4 clips usable" in out


def test_a_missing_reason1_encoder_gets_the_2p5_familys_hint_not_t5s(tmp_path):
    from cosmos_transfer.cli import TextEncoderError, resolve_text_encoder

    with pytest.raises(TextEncoderError) as caught:
        resolve_text_encoder(str(tmp_path / "checkpoints/nvidia/Cosmos-Reason1-7B"))
    hint = lambda error: str(error.value).split("existing folder.")[1].lower()  # noqa: E731 (not the path given)
    assert "hf download nvidia/cosmos-reason1-7b" in hint(caught) and "'.[reason1]'" in hint(caught)
    assert "t5" not in hint(caught)
    with pytest.raises(TextEncoderError) as caught:
        resolve_text_encoder(str(tmp_path / "checkpoints/google-t5/t5-11b"))
    assert "hf download google-t5/t5-11b" in hint(caught) and "reason1" not in hint(caught)
    with pytest.raises(TextEncoderError) as caught:  # a name that tells no family: both
        resolve_text_encoder(str(tmp_path / "my_encoder"))
    assert "google-t5/t5-11b" in hint(caught) and "nvidia/cosmos-reason1-7b" in hint(caught)


def test_device_cuda_without_cuda_is_refused_up_front_in_one_paragraph(tmp_path, monkeypatch, capsys):
    """It used to load the encoder first and end in a bare AssertionError (18 s for T5-XXL)."""
    import torch

    from cosmos_transfer.cli import run_script

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = make_tiny_dataset(tmp_path / "data", stems=["a"])
    main = _prepare_dataset_main()
    loaded = []
    monkeypatch.setattr("cosmos_transfer.data.text_encoders.load_text_encoder", lambda *a, **k: loaded.append(1))
    assert run_script("prepare_dataset", lambda: main([root, "--text_encoder", "minilm", "--device", "cuda"])) == 2
    error = capsys.readouterr().err
    assert "--device cuda: this machine has no usable CUDA device" in error and "--device cpu" in error
    assert "Traceback" not in error and loaded == []
