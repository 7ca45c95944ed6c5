"""Control files of another frame count or size than their clip are refused, never stretched or cut.

Training: the clip is left out (depth: at construction, from the header) or skipped when loaded (seg, keypoint) and
counted; prepare_dataset.py --check-only lists it. Inference: a SpecError naming both files and both shapes.
"""

import importlib.util
import logging
import os
import pickle

import numpy as np
import pytest

from cosmos_transfer.data.dataset import VideoDataset
from tests.tiny_datasets import make_tiny_dataset
from cosmos_transfer.inference.controls import prepare_inputs
from cosmos_transfer.inference.spec import SpecError, parse_spec
from cosmos_transfer.video_io import write_video
from tests.helpers import REPO_DIR as REPO

STEMS = [f"c{i}" for i in range(10)]
CLIP = (12, 32, 48)  # frames, height, width of make_tiny_dataset's clips


def _dataset(root, hint_keys, **kwargs):
    args = dict(num_frames=5, resolution=(32, 48), hint_keys=hint_keys, text_embedding_length=16,
                text_embedding_dim=8, max_bad_fraction=0.2)  # fmt: skip
    args.update(kwargs)
    return VideoDataset(root, **args)


def _depth(root, stem, shape):
    num_frames, height, width = shape
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[:, height // 4 : height // 2, width // 4 : width // 2] = 200
    path = os.path.join(root, "depth", stem + ".mp4")
    write_video(path, frames, 10.0)
    return path


def _labels(shape):
    labels = np.zeros(shape, np.uint8)
    labels[:, 4:12, 6:20] = 1
    return labels


def _seg(root, stem, shape, fmt="npz"):
    os.makedirs(os.path.join(root, "seg"), exist_ok=True)
    labels = _labels(shape)
    if fmt == "npz":
        path = os.path.join(root, "seg", stem + ".npz")
        np.savez_compressed(path, labels=labels)
        return path
    runs, value, count = [], 0, 0  # Cosmos' SAM2 RLE with plain run lengths, zeros first, over the flat [T*H*W]
    for pixel in (labels == 1).reshape(-1):
        if pixel == value:
            count += 1
        else:
            runs.append(count)
            value, count = pixel, 1
    runs.append(count)
    path = os.path.join(root, "seg", stem + ".pickle")
    with open(path, "wb") as file:
        pickle.dump([{"phrase": "box", "segmentation_mask_rle": {"data": {"counts": runs},
                                                                 "mask_shape": list(shape)}}], file)  # fmt: skip
    return path


def _keypoints(root, stem, num_frames, fmt="npz"):
    os.makedirs(os.path.join(root, "keypoint"), exist_ok=True)
    keypoints = np.zeros((num_frames, 1, 133, 3), np.float32)
    keypoints[:, 0, 5] = (0.2, 0.5, 1.0)
    if fmt == "npz":
        path = os.path.join(root, "keypoint", stem + ".npz")
        np.savez(path, keypoints=keypoints)
        return path
    path = os.path.join(root, "keypoint", stem + ".pickle")  # Cosmos: {frame: [{'body-keypoints', 'hand-keypoints'}]}
    with open(path, "wb") as file:
        pickle.dump({t: [{"body-keypoints": keypoints[t, 0, :91], "hand-keypoints": keypoints[t, 0, 91:]}]
                     for t in range(num_frames)}, file)  # fmt: skip
    return path


# ---------------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("shape", [(12, 32, 32), (12, 64, 96), (14, 32, 48), (11, 32, 48)],
                         ids=["other aspect", "same aspect, other size", "more frames", "fewer frames"])  # fmt: skip
def test_depth_of_another_shape_leaves_its_clip_out(tmp_path, caplog, shape):
    root = make_tiny_dataset(tmp_path, stems=STEMS)
    for stem in STEMS:
        _depth(root, stem, CLIP if stem != "c3" else shape)
    with caplog.at_level(logging.WARNING, logger="cosmos_transfer.data"):
        ds = _dataset(root, ["depth"])
    video = os.path.join(root, "videos", "c3.mp4")
    depth = os.path.join(root, "depth", "c3.mp4")
    assert len(ds) == 9 and [path for path, _ in ds.bad_files] == [video]
    why = ds.bad_files[0][1]
    assert depth in why and f"{shape[0]} frames of {shape[1]}x{shape[2]}" in why and "12 frames of 32x48" in why
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and depth in warnings[0]


@pytest.mark.parametrize("fmt", ["npz", "cosmos_pickle"])
@pytest.mark.parametrize("shape", [(12, 32, 32), (14, 32, 48)], ids=["other size", "more frames"])
def test_seg_of_another_shape_is_skipped_and_counted(tmp_path, caplog, fmt, shape):
    root = make_tiny_dataset(tmp_path, stems=STEMS)
    for stem in STEMS:
        _seg(root, stem, CLIP if stem != "c3" else shape, fmt)
    ds = _dataset(root, ["seg"])
    index = [clip.stem for clip in ds.clips].index("c3")
    with caplog.at_level(logging.WARNING, logger="cosmos_transfer.data"):
        sample = ds[(0, index)]
    assert sample["num_skipped"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    seg = os.path.join(root, "seg", "c3." + ("npz" if fmt == "npz" else "pickle"))
    assert len(warnings) == 1 and seg in warnings[0]
    assert f"{shape[0]} frames of {shape[1]}x{shape[2]}" in warnings[0] and "12 frames of 32x48" in warnings[0]
    assert int(ds[(0, (index + 1) % len(ds))]["num_skipped"]) == 0  # the well-made files load as before


@pytest.mark.parametrize("fmt", ["npz", "cosmos_pickle"])
def test_keypoints_of_another_length_are_skipped_and_counted(tmp_path, caplog, fmt):
    root = make_tiny_dataset(tmp_path, stems=STEMS)
    for stem in STEMS:
        _keypoints(root, stem, 12 if stem != "c3" else 20, fmt)
    ds = _dataset(root, ["keypoint"])
    index = [clip.stem for clip in ds.clips].index("c3")
    with caplog.at_level(logging.WARNING, logger="cosmos_transfer.data"):
        assert ds[(0, index)]["num_skipped"] == 1
        assert int(ds[(0, (index + 1) % len(ds))]["num_skipped"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    path = os.path.join(root, "keypoint", "c3." + ("npz" if fmt == "npz" else "pickle"))
    assert len(warnings) == 1 and path in warnings[0]
    assert ("20 frames" if fmt == "npz" else "frame 19") in warnings[0] and "12 frames" in warnings[0]


def _prepare_dataset_main():
    spec = importlib.util.spec_from_file_location("prepare_dataset", os.path.join(REPO, "scripts", "prepare_dataset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_prepare_dataset_check_only_lists_controls_of_another_shape(tmp_path, capsys):
    root = make_tiny_dataset(tmp_path, stems=["a", "b", "c", "d"])
    for stem in "abcd":
        _depth(root, stem, CLIP if stem != "b" else (12, 24, 48))
        _seg(root, stem, CLIP if stem != "c" else (10, 32, 48))
    args = [root, "--check-only", "--num-frames", "5", "--resolution", "32x48", "--text-embedding-dim", "8",
            "--hint-keys", "depth,seg"]  # fmt: skip
    assert _prepare_dataset_main()(args) == 1
    out = capsys.readouterr().out
    videos = os.path.join(root, "videos")
    assert f"BAD {os.path.join(videos, 'b.mp4')}: depth video {os.path.join(root, 'depth', 'b.mp4')} has 12 " \
           f"frames of 24x48" in out  # fmt: skip
    assert f"BAD {os.path.join(videos, 'c.mp4')}: segmentation {os.path.join(root, 'seg', 'c.npz')} has 10 " \
           f"frames of 32x48" in out  # fmt: skip
    assert "2 of 4 clips usable" in out


# --------------------------------------------------------------------------------------------------- inference
def _video(path, shape, value=90):
    num_frames, height, width = shape
    frames = np.full((num_frames, height, width, 3), value, np.uint8)
    frames[:, height // 4 : height // 2, width // 4 : width // 2] = 230
    write_video(path, frames, 8.0, crf=0)
    return str(path)


@pytest.mark.parametrize("shape", [(5, 32, 48), (5, 64, 64), (6, 32, 32)],
                         ids=["other aspect", "same aspect, other size", "more frames"])  # fmt: skip
def test_inference_control_video_of_another_shape_names_both_files(tmp_path, shape):
    spec = parse_spec({"input_video_path": _video(tmp_path / "input.mp4", (5, 32, 32)),
                       "depth": {"input_control": _video(tmp_path / "depth.mp4", shape)}}, source="spec.json")  # fmt: skip
    with pytest.raises(SpecError) as error:
        prepare_inputs(spec, (32, 32))
    message = str(error.value)
    assert "spec.json" in message and str(tmp_path / "depth.mp4") in message and str(tmp_path / "input.mp4") in message
    assert f"{shape[0]} frames of {shape[1]}x{shape[2]}" in message and "5 frames of 32x32" in message


def test_inference_controls_without_input_video_must_match_each_other(tmp_path):
    spec = parse_spec({"depth": {"input_control": _video(tmp_path / "depth.mp4", (5, 32, 32))},
                       "seg": {"input_control": _video(tmp_path / "seg.mp4", (5, 32, 40))}})  # fmt: skip
    with pytest.raises(SpecError, match=r"seg.mp4 has 5 frames of 32x40.*depth.mp4.* has 5 frames of 32x32"):
        prepare_inputs(spec, (32, 32))


def test_inference_weight_map_of_another_size_is_refused(tmp_path):
    spec = parse_spec({"input_video_path": _video(tmp_path / "input.mp4", (5, 32, 32)),
                       "edge": {"control_weight": _video(tmp_path / "weight.mp4", (5, 16, 32), value=255)}})  # fmt: skip
    with pytest.raises(SpecError, match=r"weight.mp4 has 5 frames of 16x32.*input.mp4.* has 5 frames of 32x32"):
        prepare_inputs(spec, (32, 32))


def test_inference_matching_controls_still_work(tmp_path):
    spec = parse_spec({"input_video_path": _video(tmp_path / "input.mp4", (5, 32, 48)),
                       "depth": {"input_control": _video(tmp_path / "depth.mp4", (5, 32, 48))},
                       "edge": {"control_weight": _video(tmp_path / "weight.mp4", (5, 32, 48), value=255)}})  # fmt: skip
    inputs = prepare_inputs(spec, (32, 48))
    assert inputs.controls["depth"].shape == (5, 32, 48, 3) and inputs.weights["edge"].shape == (5, 32, 48)
