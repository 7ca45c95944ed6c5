"""Inference inputs: spec parsing and its errors, each control source, weight maps, window planning."""

import json

import numpy as np
import pytest

from cosmos_transfer.data.controls import EDGE_PRESETS, blur_control, edge_control
from cosmos_transfer.inference.controls import prepare_inputs
from cosmos_transfer.inference.spec import SpecError, load_spec, parse_spec
from cosmos_transfer.inference.windows import plan_windows, window_slice
from cosmos_transfer.video_io import write_video


def _video(num_frames=5, height=32, width=32, seed=0):
    rng = np.random.default_rng(seed)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):  # a bright square moving right over a dim gradient
        frames[t] = np.linspace(20, 90, width, dtype=np.uint8)[None, :, None]
        frames[t, 8:20, 4 + 2 * t : 16 + 2 * t] = rng.integers(180, 255, 3)
    return frames


@pytest.fixture
def files(tmp_path):
    paths = {
        "input": tmp_path / "input.mp4",
        "depth": tmp_path / "depth.mp4",
        "weight": tmp_path / "weight.mp4",
        "short_weight": tmp_path / "short_weight.mp4",
    }
    write_video(paths["input"], _video(), fps=8, crf=0)
    write_video(paths["depth"], _video(seed=1)[..., ::-1].copy(), fps=8, crf=0)
    write_video(paths["weight"], np.full((5, 32, 32, 3), 255, np.uint8) * (np.arange(5) % 2)[:, None, None, None].astype(np.uint8), fps=8, crf=0)
    write_video(paths["short_weight"], np.full((3, 32, 32, 3), 128, np.uint8), fps=8, crf=0)
    return {k: str(v) for k, v in paths.items()}


def test_parse_spec_reads_every_field(files):
    spec = parse_spec({
        "prompt": "a ball",
        "negative_prompt": "blurry",
        "input_video_path": files["input"],
        "control_input_edge": {"control_weight": 0.7},
        "vis": {"control_weight": files["weight"]},
        "depth": {"input_control": files["depth"]},
    })
    assert set(spec.controls) == {"edge", "vis", "depth"}
    assert spec.controls["edge"].control_weight == 0.7 and spec.controls["edge"].input_control is None
    assert spec.controls["vis"].weight_is_map
    assert spec.controls["depth"].control_weight == 1.0 and spec.controls["depth"].input_control == files["depth"]
    assert spec.prompt == "a ball" and spec.negative_prompt == "blurry"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda f: {"input_video_path": f["input"], "canny": {}}, "unknown key 'canny'"),
        (lambda f: {"input_video_path": f["input"] + ".missing", "edge": {}}, "input_video_path .* does not exist"),
        (lambda f: {"input_video_path": f["input"], "depth": {"input_control": "nope.mp4"}}, "input_control 'nope.mp4' does not exist"),
        (lambda f: {"input_video_path": f["input"], "edge": {"control_weight": "nope.mp4"}}, "control_weight video 'nope.mp4' does not exist"),
        (lambda f: {"input_video_path": f["input"], "depth": {}}, "'depth' needs 'input_control'"),
        (lambda f: {"edge": {}}, "no 'input_video_path'"),
        (lambda f: {"input_video_path": f["input"]}, "no control given"),
        (lambda f: {"input_video_path": f["input"], "edge": {"control_weight": -1}}, ">= 0"),
        (lambda f: {"input_video_path": f["input"], "edge": {"control_weight": [1, 2]}}, "number or the path"),
        (lambda f: {"input_video_path": f["input"], "edge": {"weight": 1}}, r"unknown entries \['weight'\]"),
        (lambda f: {"input_video_path": f["input"], "edge": 1.0}, "must be an object"),
        (lambda f: {"input_video_path": f["input"], "edge": {}, "prompt": "a", "prompt_embedding": f["input"]}, "either"),
        (lambda f: ["edge"], "JSON object"),
    ],
)
def test_spec_errors_are_clear(files, make, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(make(files), source="spec.json")


def test_load_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(str(bad))
    bad.write_text('{"edge": ' + "[" * 100_000 + "]" * 100_000 + "}")  # a RecursionError in json
    with pytest.raises(SpecError, match="nested too deeply"):
        load_spec(str(bad))


@pytest.mark.parametrize("text", ["Infinity", "NaN", "-Infinity", "1e999"])
def test_a_non_finite_control_weight_is_refused_naming_the_control(files, tmp_path, text):
    """JSON's NaN and Infinity literals (and 1e999) parse as floats; a NaN weight made an all-black video."""
    path = tmp_path / "spec.json"
    path.write_text('{"input_video_path": %s, "edge": {"control_weight": %s}}' % (json.dumps(files["input"]), text))
    with pytest.raises(SpecError, match=r"spec.json: 'edge': control_weight must be a finite number >= 0, got"):
        load_spec(str(path))


def test_prepare_inputs_computes_and_reads_controls(files):
    spec = parse_spec({
        "input_video_path": files["input"],
        "edge": {"control_weight": 0.5},
        "vis": {"control_weight": files["weight"]},
        "depth": {"input_control": files["depth"]},
    })
    inputs = prepare_inputs(spec, (32, 32), canny_threshold="low", blur_strength="medium")
    assert inputs.num_frames == 5 and inputs.fps == pytest.approx(8.0)
    assert inputs.input_video.shape == (5, 32, 32, 3)
    lower, upper = EDGE_PRESETS["low"]
    expected_edges = edge_control(inputs.input_video, lower, upper)
    expected_edges = np.repeat(expected_edges, 3, axis=-1) if expected_edges.shape[-1] == 1 else expected_edges
    np.testing.assert_array_equal(inputs.controls["edge"], expected_edges)
    assert inputs.controls["edge"].any()
    np.testing.assert_array_equal(inputs.controls["vis"], blur_control(inputs.input_video, preset="medium"))
    assert inputs.controls["depth"].shape == (5, 32, 32, 3)
    assert abs(int(inputs.controls["depth"].astype(int).sum()) - int(inputs.input_video.sum())) > 0
    assert inputs.weights["edge"] == 0.5
    weight = inputs.weights["vis"]
    assert weight.shape == (5, 32, 32) and weight.dtype == np.float32
    np.testing.assert_allclose(weight.mean(axis=(1, 2)), [0, 1, 0, 1, 0], atol=0.02)


def test_prepare_inputs_pads_other_aspect_ratios(files):
    spec = parse_spec({"input_video_path": files["input"], "edge": {}})
    inputs = prepare_inputs(spec, (32, 48), max_frames=3)
    assert inputs.controls["edge"].shape == (3, 32, 48, 3)
    assert (inputs.fit.valid_height, inputs.fit.valid_width) == (32, 32)
    assert inputs.padding_mask.shape == (1, 32, 48)
    assert inputs.padding_mask[0, :, :8].all() and not inputs.padding_mask[0, :, 8:40].any()
    assert inputs.crop(inputs.input_video).shape == (3, 32, 32, 3)


def test_weight_video_of_the_wrong_length_is_named(files):
    spec = parse_spec({"input_video_path": files["input"], "edge": {"control_weight": files["short_weight"]}},
                      source="spec.json")
    with pytest.raises(SpecError, match="short_weight.mp4 has 3 frames of 32x32, but input_video_path .* has 5 frames"):
        prepare_inputs(spec, (32, 32))


def test_control_video_of_another_length_is_named(files, tmp_path):
    short = tmp_path / "depth_short.mp4"
    write_video(short, _video(num_frames=4), fps=8, crf=0)
    spec = parse_spec({"input_video_path": files["input"], "depth": {"input_control": str(short)}})
    with pytest.raises(SpecError, match="depth_short.mp4 has 4 frames of 32x32, but input_video_path .* has 5 frames"):
        prepare_inputs(spec, (32, 32))


def test_spec_file_round_trip(files, tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"prompt": "x", "input_video_path": files["input"], "edge": {"control_weight": 1}}))
    spec = load_spec(str(path))
    assert spec.source == str(path) and spec.controls["edge"].control_weight == 1.0


@pytest.mark.parametrize(
    "num_frames, window, overlap, expected",
    [
        (17, 17, 1, [(0, 17, 0, 17)]),
        (10, 17, 1, [(0, 17, 0, 10)]),
        (33, 17, 1, [(0, 17, 0, 17), (16, 33, 1, 33)]),
        (40, 17, 1, [(0, 17, 0, 17), (16, 33, 1, 33), (32, 49, 1, 40)]),
        (30, 10, 0, [(0, 10, 0, 10), (10, 20, 0, 20), (20, 30, 0, 30)]),
        (121 + 112, 121, 9, [(0, 121, 0, 121), (112, 233, 9, 233)]),
    ],
)
def test_plan_windows(num_frames, window, overlap, expected):
    windows = plan_windows(num_frames, window, overlap)
    assert [(w.start, w.stop, w.conditioning_frames, w.keep_stop) for w in windows] == expected
    # every frame is generated exactly once
    new = [f for w in windows for f in range(w.start + w.conditioning_frames, w.keep_stop)]
    assert new == list(range(num_frames))


def test_window_slice_repeats_the_last_frame_and_plan_errors():
    frames = np.arange(5)[:, None]
    window = plan_windows(5, 4, 1)[1]
    np.testing.assert_array_equal(window_slice(frames, window)[:, 0], [3, 4, 4, 4])
    with pytest.raises(ValueError, match="overlap_frames"):
        plan_windows(10, 4, 4)
    with pytest.raises(ValueError, match="no frames"):
        plan_windows(0, 4, 1)
