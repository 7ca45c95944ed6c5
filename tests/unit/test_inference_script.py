"""scripts/inference.py end to end on CPU with the demo experiment: weights from none / a safetensors file / a DCP
job folder (EMA by default), the demo text encoder, outputs and settings, and clear errors."""

import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from configs.train import make_config
from cosmos_transfer.data.demo import make_clip
from cosmos_transfer.video_io import read_video, write_video
from tests.helpers import REPO_DIR as ROOT

EXPERIMENT = "demo_edge_tiny"


def loading_config():
    from cosmos_transfer.inference.loading import compose_config

    return compose_config(EXPERIMENT, make_config=make_config)


def _load_script():
    spec = importlib.util.spec_from_file_location("inference_script", os.path.join(ROOT, "scripts", "inference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inference = _load_script()


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inference_script")
    frames, caption = make_clip(50_000, 64, 21)
    video = str(folder / "input.mp4")
    write_video(video, frames, fps=16, crf=10, pix_fmt="yuv444p")
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"prompt": caption, "input_video_path": video, "edge": {"control_weight": 1.0}}))
    # The same prompt embedded once (the demo text encoder), for the runs that do not test text encoding.
    from cosmos_transfer.data.text_embeddings import save_text_embedding
    from cosmos_transfer.data.text_encoders import TextEncoder, demo_text_encoder_dir

    embedding = str(folder / "prompt.safetensors")
    save_text_embedding(embedding, TextEncoder(demo_text_encoder_dir(), max_length=40).encode([caption])[0],
                        encoder="all-MiniLM-L6-v2", max_length=40, caption=caption)
    embedded_spec = folder / "spec_embedded.json"
    embedded_spec.write_text(json.dumps({"prompt_embedding": embedding, "input_video_path": video, "edge": {}}))
    return {"folder": folder, "spec": str(spec), "embedded_spec": str(embedded_spec), "input": video}


@pytest.fixture(scope="module")
def model_weights(demo_files):
    """A demo model whose control layers are not zero (so that weights visibly matter), saved two ways."""
    import torch.distributed.checkpoint as dcp

    from cosmos_transfer.checkpoints.files import save_weights_file
    from cosmos_transfer.inference import loading

    model = loading.build_model(loading.compose_config(EXPERIMENT, make_config=make_config))
    torch.manual_seed(0)
    state = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    safetensors_path = str(demo_files["folder"] / "weights.safetensors")
    save_weights_file(state, safetensors_path)
    # A job folder as the trainer leaves it: checkpoints/iter_*/ (DCP, model.* and ema.shadow.*) + latest file.
    job = demo_files["folder"] / "job"
    checkpoint = job / "checkpoints" / "iter_000000010"
    trainable = {k: v for k, v in state.items() if k.startswith("net_ctrl.")}
    ema = {k: v + 0.05 * torch.randn_like(v) for k, v in trainable.items()}
    dcp.save({"model": state, "ema": {"shadow": ema}}, checkpoint_id=str(checkpoint), no_dist=True)
    (job / "checkpoints" / "latest_checkpoint.txt").write_text("iter_000000010\n")
    return {"safetensors": safetensors_path, "job": str(job)}


def _run(demo_files, out_name, *extra, text_encoder=False):
    out = str(demo_files["folder"] / out_name)
    spec = ["--spec", demo_files["spec"], "--text_encoder", "demo"] if text_encoder else \
        ["--spec", demo_files["embedded_spec"]]
    args = ["--experiment", EXPERIMENT, *spec, "--out", out, "--num_steps", "2", "--guidance", "0",
            "--max_frames", "17", *extra]
    assert inference.main(args) == 0
    return read_video(out)[0], json.loads(open(out[:-4] + ".json").read())


@pytest.mark.slow
def test_generates_an_mp4_with_settings_and_side_by_side(demo_files, model_weights):
    untrained, settings = _run(demo_files, "untrained.mp4", "--checkpoint", "none", "--side_by_side",
                               "--output_size", "32", "48", "--fps", "8", text_encoder=True)
    assert untrained.shape == (17, 32, 48, 3)
    assert settings["checkpoint"] is None and settings["num_frames"] == 17
    assert settings["window_frames"] == loading_config().dataloader_train["dataset"]["num_frames"]
    assert settings["fps"] == 8 and settings["controls"] == {"edge": 1.0}
    side = read_video(str(demo_files["folder"] / "untrained_side_by_side.mp4"))[0]
    assert side.shape == (17, 32, 48 * 3, 3)  # input | edge | output


@pytest.mark.slow
def test_weights_from_a_file_or_a_job_folder_with_ema(demo_files, model_weights):
    from_file, settings = _run(demo_files, "file.mp4", "--checkpoint", model_weights["safetensors"], "--no_ema",
                               "--num_steps", "1")
    assert settings["checkpoint"] == model_weights["safetensors"]
    assert from_file.shape == (17, *settings["resolution"], 3)  # the square clip fills the generation frame
    regular, settings = _run(demo_files, "regular.mp4", "--checkpoint", model_weights["job"], "--no_ema",
                             "--num_steps", "1")
    assert settings["checkpoint"].endswith("iter_000000010")
    with_ema, settings = _run(demo_files, "ema.mp4", "--checkpoint", model_weights["job"], "--num_steps", "1")
    assert settings["ema"] is True
    # the same weights from the DCP job folder and from the file give the same video up to the mp4 encoder, which
    # can turn last-bit float differences into a few levels in a noisy video; the EMA weights give another video
    def mean_difference(a, b):
        return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())

    print("same weights:", mean_difference(regular, from_file), "EMA:", mean_difference(regular, with_ema))
    assert mean_difference(regular, from_file) < 0.25 * mean_difference(regular, with_ema)


def test_default_checkpoint_is_the_experiment_job_folder(demo_files, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path))
    out = str(tmp_path / "out.mp4")
    code = inference.main(["--experiment", EXPERIMENT, "--spec", demo_files["spec"], "--out", out,
                           "--text_encoder", "demo"])
    assert code == 2
    assert "demo_edge_tiny" in capsys.readouterr().err  # names the job folder it looked in


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: ["--spec", str(f["folder"] / "missing.json")], "missing.json' does not exist"),
        (lambda f: ["--checkpoint", str(f["folder"] / "nope.safetensors")], "nope.safetensors does not exist"),
        (lambda f: ["--experiment", "no_such_experiment"], "no_such_experiment"),
        (lambda f: ["--control_checkpoint", "edge"], "KEY=PATH"),
        (lambda f: ["--config", "configs/missing.py"], "'configs/missing.py' does not exist"),
    ],
)
def test_errors_exit_2_with_a_message(demo_files, capsys, change, message):
    args = {"--experiment": EXPERIMENT, "--spec": demo_files["spec"], "--out": str(demo_files["folder"] / "x.mp4"),
            "--checkpoint": "none", "--text_encoder": "demo"}
    extra = change(demo_files)
    args.update(dict(zip(extra[::2], extra[1::2])))
    assert inference.main([item for pair in args.items() for item in pair]) == 2
    assert message in capsys.readouterr().err


def test_unknown_hint_key_in_spec(demo_files, capsys, tmp_path):
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"prompt": "x", "input_video_path": demo_files["input"], "canny": {}}))
    assert inference.main(["--experiment", EXPERIMENT, "--spec", str(spec), "--out", str(tmp_path / "o.mp4"),
                           "--checkpoint", "none"]) == 2
    assert "unknown key 'canny'" in capsys.readouterr().err


@pytest.mark.slow
def test_checkpoint_of_another_model_size_is_named(demo_files, capsys, tmp_path):
    import torch.distributed.checkpoint as dcp

    from cosmos_transfer.inference import loading

    state = loading.build_model(loading.compose_config(EXPERIMENT, make_config=make_config)).state_dict()
    state["net.affline_norm.weight"] = torch.ones(3)  # a model built with other channels
    dcp.save({"model": state}, checkpoint_id=str(tmp_path / "iter_000000001"), no_dist=True)
    assert inference.main(["--experiment", EXPERIMENT, "--spec", demo_files["embedded_spec"], "--out",
                           str(tmp_path / "o.mp4"), "--checkpoint", str(tmp_path / "iter_000000001")]) == 2
    error = capsys.readouterr().err
    assert "does not fit the model built from this experiment" in error and "affline_norm" in error


# ------------------------------------------------------------------------------------------------- outputs (issue 25)
def _args(demo_files, out, spec=None, *extra):
    return ["--experiment", EXPERIMENT, "--spec", spec or demo_files["embedded_spec"], "--out", str(out),
            "--checkpoint", "none", "--num_steps", "1", "--guidance", "0", "--max_frames", "9", *extra]


def test_an_output_that_is_an_input_is_refused_before_any_work(demo_files, capsys, tmp_path):
    """`--out` equal to the input video used to overwrite it with the generated one (exit 0)."""
    video = tmp_path / "input.mp4"
    video.write_bytes(open(demo_files["input"], "rb").read())
    (tmp_path / "edge.mp4").write_bytes(open(demo_files["input"], "rb").read())
    embedded = json.loads(open(demo_files["embedded_spec"]).read())
    spec = tmp_path / "clip.json"  # the settings file of --out clip.mp4 would be this spec
    spec.write_text(json.dumps({**embedded, "input_video_path": str(video),
                                "edge": {"input_control": str(tmp_path / "edge.mp4")}}))
    before = {path: path.read_bytes() for path in (video, spec, tmp_path / "edge.mp4")}
    os.link(video, tmp_path / "linked.mp4")
    cases = [
        (video, f"--out '{video}' is the spec's input_video_path '{video}' (the same file)"),
        (tmp_path / "linked.mp4", f"--out '{tmp_path / 'linked.mp4'}' is the spec's input_video_path"),
        (tmp_path / "clip.mp4", f"the settings file of --out '{spec}' is --spec '{spec}'"),
        (tmp_path / "edge.mp4", "is the spec's edge input_control"),
        (tmp_path / "clip.json" / "x.mp4", "is a file, not a folder"),
    ]
    (tmp_path / "folder.mp4").mkdir()
    cases.append((tmp_path / "folder.mp4", "is an existing folder"))
    for out, message in cases:
        assert inference.main(_args(demo_files, out, str(spec))) == 2, out
        err = capsys.readouterr().err
        assert err.startswith("inference: error: ") and message in err, (out, err)
    assert all(path.read_bytes() == data for path, data in before.items())
    # The side-by-side video is an output too, checked only when asked for.
    spec_side = tmp_path / "s.json"
    spec_side.write_text(json.dumps({**embedded, "input_video_path": str(tmp_path / "o_side_by_side.mp4")}))
    (tmp_path / "o_side_by_side.mp4").write_bytes(before[video])
    assert inference.main(_args(demo_files, tmp_path / "o.mp4", str(spec_side), "--side_by_side")) == 2
    assert "the side-by-side video of --out" in capsys.readouterr().err


def test_a_missing_cuda_is_named_before_anything_is_built(demo_files, capsys, tmp_path, monkeypatch):
    """It used to be a bare AssertionError ("Torch not compiled with CUDA enabled") once the model was built."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference.main(_args(demo_files, tmp_path / "o.mp4", None, "--device", "cuda")) == 2
    assert "--device cuda: this machine has no usable CUDA device" in capsys.readouterr().err
    assert inference.main(_args(demo_files, tmp_path / "o.mp4", None, "--device", "gpu0")) == 2
    assert "--device 'gpu0' is not a device: expected cpu, cuda or cuda:N" in capsys.readouterr().err


def test_hostile_inputs_are_one_paragraph(demo_files, capsys, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # RecursionError in json.load
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "folder.json").mkdir()
    garbage = tmp_path / "adapters.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")  # SafetensorError when read
    cases = [
        ([str(deep)], "its JSON is nested too deeply to read"),
        ([str(tmp_path / "empty.json")], "not valid JSON"),
        ([str(tmp_path / "folder.json")], "folder.json"),
        ([None, "--lora_checkpoint", str(garbage)], "adapters.safetensors"),
    ]
    for (spec, *extra), message in cases:
        assert inference.main(_args(demo_files, tmp_path / "o.mp4", spec, *extra)) == 2, spec
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.startswith("inference: error: ") and message in err, err


def test_a_weights_file_with_nan_exits_2_naming_the_file_and_tensor(demo_files, capsys, tmp_path):
    """It used to generate an all-black video and exit 0 (issue 25)."""
    from cosmos_transfer.checkpoints.files import save_weights_file
    from cosmos_transfer.inference import loading

    state = loading.build_model(loading.compose_config(EXPERIMENT, make_config=make_config)).state_dict()
    key = "net.final_layer.linear.weight"
    state[key][0, :3] = torch.tensor([float("nan"), float("inf"), float("nan")])
    weights = str(tmp_path / "diverged.safetensors")
    save_weights_file(state, weights)
    out = tmp_path / "o.mp4"
    assert inference.main(["--experiment", EXPERIMENT, "--spec", demo_files["embedded_spec"], "--out", str(out),
                           "--checkpoint", weights, "--num_steps", "1", "--max_frames", "17"]) == 2
    error = capsys.readouterr().err
    assert weights in error and f"'{key}'" in error and "3 non-finite values (2 NaN, 1 inf)" in error, error
    assert "Traceback" not in error and not out.exists()


def test_lora_adapters_of_another_shape_exit_2_naming_the_layer(demo_files, capsys, tmp_path):
    """They used to broadcast into the layer's weight and generate from the damaged model (issue 25)."""
    from torch import nn

    from cosmos_transfer import lora
    from cosmos_transfer.inference import loading

    model = loading.build_model(loading.compose_config(EXPERIMENT, make_config=make_config))
    layer, linear = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("net."))
    out_features, _ = linear.weight.shape
    adapters = str(tmp_path / "other.lora.safetensors")
    lora.save_adapters(adapters, {f"{layer}.lora_A.default.weight": torch.ones(4, 1),  # [rank, 1]: broadcasts
                                  f"{layer}.lora_B.default.weight": torch.ones(out_features, 4)},
                       {"rank": 4, "alpha": 4.0, "target_modules": [layer]})
    out = tmp_path / "o.mp4"
    assert inference.main(["--experiment", EXPERIMENT, "--spec", demo_files["embedded_spec"], "--out", str(out),
                           "--checkpoint", "none", "--lora_checkpoint", adapters, "--num_steps", "1",
                           "--max_frames", "17"]) == 2
    error = capsys.readouterr().err
    assert adapters in error and f"the adapters of {layer} do not fit it" in error and "(4, 1)" in error, error
    assert "Traceback" not in error and not out.exists()


@pytest.mark.parametrize("option, value", [("--fps", "-1"), ("--max_frames", "0"), ("--num_steps", "0"),
                                           ("--window_frames", "-5"), ("--sigma_max", "-1"), ("--text_length", "0")])
def test_a_setting_out_of_range_is_refused_before_any_work(demo_files, capsys, tmp_path, option, value):
    """--fps -1 failed only when the generated video was written; --max_frames 0 said 'need at least one array to
    stack'."""
    args = [a for a in _args(demo_files, tmp_path / "o.mp4") if a not in ("--max_frames", "9")]
    with pytest.raises(SystemExit) as exit_:
        inference.main([*args, option, value])
    assert exit_.value.code == 2
    assert f"{option} must be positive, got {float(value) if option.startswith(('--fps', '--sigma')) else value}" \
        in capsys.readouterr().err
