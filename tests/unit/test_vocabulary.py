"""One vocabulary across the scripts (issue 16, item 3): the same text-encoder names and resolution syntax in
scripts/prepare_dataset.py and scripts/inference.py, a wrong name answered with the right one, and a missing
encoder folder named in a message instead of a traceback (item 2)."""

import importlib.util
import os

import pytest
from tests.helpers import REPO_DIR as ROOT



def _script(name):
    spec = importlib.util.spec_from_file_location(f"vocab_{name}", os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_encoder_has_one_name_and_an_alias():
    from cosmos_transfer.cli import resolve_text_encoder

    folder, name = resolve_text_encoder("minilm")
    assert os.path.isdir(folder) and name == "all-MiniLM-L6-v2"
    assert resolve_text_encoder("demo") == (folder, name)


def test_a_wrong_encoder_name_suggests_the_right_one():
    from cosmos_transfer.cli import TextEncoderError, resolve_text_encoder

    with pytest.raises(TextEncoderError, match="Did you mean 'minilm'") as error:
        resolve_text_encoder("minlm")
    assert "google-t5/t5-11b" in str(error.value) and "'.[t5]'" in str(error.value)


def test_prepare_dataset_missing_encoder_folder_is_a_message(tmp_path, capsys):
    from tests.tiny_datasets import make_tiny_dataset

    root = make_tiny_dataset(tmp_path / "clips")
    main = _script("prepare_dataset").main
    assert main([root, "--text_encoder", str(tmp_path / "t5-11b"), "--num-frames", "5",
                 "--resolution", "32x48"]) == 2
    err = capsys.readouterr().err
    assert "t5-11b' is neither a known name (minilm" in err and "Traceback" not in err
    (tmp_path / "empty_model").mkdir()  # a folder without the model's files: named, no traceback
    assert main([root, "--text_encoder", str(tmp_path / "empty_model"), "--num-frames", "5",
                 "--resolution", "32x48"]) == 2
    err = capsys.readouterr().err
    assert "cannot load the text encoder from" in err and "empty_model" in err and "Traceback" not in err
    # the older spelling of the option still works and reads the same names
    args = _script("prepare_dataset").parse_args([root, "--encoder", "demo", "--resolution", "32x48"])
    assert args.text_encoder == "demo" and args.embedding_folder == "minilm_l6" and args.max_length == 40


@pytest.mark.parametrize("words, expected, hint", [
    (["32x64"], (32, 64), False),
    (["tiny"], (64, 64), False),
    (["32", "64"], (32, 64), True),
    (["[32,64]"], (32, 64), True),
    (["32,64"], (32, 64), True),
])
def test_one_resolution_syntax_others_read_with_a_hint(words, expected, hint, capsys):
    inference = _script("inference")
    args, _ = inference.parse_args(["--experiment", "demo_edge_tiny", "--spec", "s.json", "--out", "o.mp4",
                                    "--resolution", *words, "--output_size", *words])
    assert args.resolution == expected and args.output_size == expected
    assert ("HxW is the spelling every script takes" in capsys.readouterr().err) is hint
    prepare = _script("prepare_dataset")
    assert prepare.parse_args(["root", "--check-only", "--resolution", *words]).resolution == expected


def test_a_bad_resolution_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as error:
        _script("inference").parse_args(["--experiment", "x", "--spec", "s", "--out", "o.mp4", "--resolution", "32by64"])
    assert error.value.code == 2 and "expected HxW (e.g. 704x1280)" in capsys.readouterr().err


def test_inference_takes_minilm_and_lists_every_missing_file_at_once(tmp_path, capsys):
    main = _script("inference").main
    common = ["--experiment", "demo_edge_tiny", "--spec", str(tmp_path / "spec.json"), "--out", str(tmp_path / "o.mp4"),
              "--checkpoint", str(tmp_path / "gone.safetensors")]
    assert main([*common, "--text_encoder", "minilm"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "spec.json' does not exist" in err and "gone.safetensors does not exist" in err
    assert "text encoder" not in err  # minilm is understood (it used to be "text encoder folder not found: minilm")
    assert main([*common, "--text_encoder", "minilm_l6"]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err and "Did you mean 'minilm'" in err
