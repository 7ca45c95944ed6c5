"""Control inputs: edge, vis, depth, seg (ours and Cosmos' RLE), keypoint (ours and Cosmos'), determinism per seed."""

import os
import pickle

import numpy as np
import pytest
import torch

from cosmos_transfer.data import controls as C
from cosmos_transfer.video_io import write_video
from cosmos_transfer.data.dataset import VideoDataset
from cosmos_transfer.hints import normalize_hint_key
from tests.tiny_datasets import make_tiny_dataset as make_clip_folder


def dataset(root, **kwargs):
    args = dict(num_frames=5, resolution=(32, 64), hint_keys=["edge"], text_embedding_length=16, text_embedding_dim=8)
    args.update(kwargs)
    return VideoDataset(root, **args)


def _square_frames(num_frames=3, size=32):
    frames = np.full((num_frames, size, size, 3), 60, np.uint8)
    frames[:, 10:22, 10:22] = (240, 240, 40)
    return frames


def test_edge_control_outlines_shapes():
    edges = C.edge_control(_square_frames(), *C.EDGE_PRESETS["medium"])
    assert edges.shape == (3, 32, 32, 1) and edges.dtype == np.uint8
    assert set(np.unique(edges)) == {0, 255}
    outline = edges[0, ..., 0] > 0
    assert outline[9:23, 9:23].sum() == outline.sum() > 20  # all edges lie on the square's border
    assert not outline[13:19, 13:19].any()  # nothing inside


def test_random_edge_thresholds_follow_cosmos_ranges():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lower, upper = C.random_edge_thresholds(rng)
        assert 20 <= lower < 100 and lower + 50 <= upper <= min(255, lower + 149)


def test_vis_control_blurs_and_is_deterministic_per_generator():
    frames = _square_frames(size=64)
    blurred = C.blur_control(frames, np.random.default_rng(3))
    again = C.blur_control(frames, np.random.default_rng(3))
    assert blurred.shape == frames.shape and np.array_equal(blurred, again)
    sharpness = lambda x: np.abs(np.diff(x.astype(float), axis=2)).max()  # noqa: E731
    assert sharpness(blurred) < 0.6 * sharpness(frames)
    preset = C.blur_control(frames, preset="high")
    assert sharpness(preset) < sharpness(C.blur_control(frames, preset="very_low")) < sharpness(frames)


def _encode_coco_counts(runs):
    """pycocotools' compressed RLE string (the inverse of decode_coco_rle_counts), written out for the test."""
    out = []
    for i, value in enumerate(runs):
        if i > 2:
            value -= runs[i - 2]
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = value != -1 if chunk & 0x10 else value != 0
            out.append(chr((chunk | (0x20 if more else 0)) + 48))
    return "".join(out)


def _runs_of(flat):
    runs, current, count = [], 0, 0
    for v in flat:
        if v == current:
            count += 1
        else:
            runs.append(count)
            current, count = v, 1
    runs.append(count)
    return runs


def test_coco_rle_round_trip():
    rng = np.random.default_rng(0)
    flat = (rng.random(500) < 0.3).astype(np.uint8)
    flat[100:300] = 1  # a long run needs several characters
    counts = _encode_coco_counts(_runs_of(flat))
    runs = C.decode_coco_rle_counts(counts)
    assert runs.sum() == 500
    np.testing.assert_array_equal(C.rle_slice(runs, 0, 500), flat)
    np.testing.assert_array_equal(C.rle_slice(runs, 123, 321), flat[123:321])
    np.testing.assert_array_equal(C.rle_slice(C.decode_coco_rle_counts(counts.encode()), 7, 9), flat[7:9])


def _labels(num_frames, height, width):
    labels = np.zeros((num_frames, height, width), np.uint8)
    labels[:, 4:12, 6:20] = 1
    labels[:, 16:28, 24:40] = 2
    return labels


@pytest.mark.parametrize("fmt", ["npz", "cosmos_pickle"])
def test_seg_control(tmp_path, fmt):
    root = make_clip_folder(tmp_path, num_frames=12, size=(32, 48))
    os.makedirs(os.path.join(root, "seg"))
    for stem in ("a", "b", "c"):
        labels = _labels(12, 32, 48)
        if fmt == "npz":
            np.savez_compressed(os.path.join(root, "seg", stem + ".npz"), labels=labels)
        else:  # SAM2 output as Cosmos stores it: one RLE over the whole [T*H*W, 1] column per object
            objects = []
            for object_id in (1, 2):
                flat = (labels == object_id).reshape(-1).astype(np.uint8)
                rle = {"size": [flat.size, 1], "counts": _encode_coco_counts(_runs_of(flat)).encode()}
                objects.append({"phrase": f"object {object_id}",
                                "segmentation_mask_rle": {"data": rle, "mask_shape": list(labels.shape)}})  # fmt: skip
            with open(os.path.join(root, "seg", stem + ".pickle"), "wb") as file:
                pickle.dump(objects, file)
    ds = dataset(root, hint_keys=["seg"], resolution=(32, 48), is_train=False)  # every object (training: a subset)
    seg = ds[(0, 1)]["control_input_seg"].permute(1, 2, 3, 0).numpy()  # [T, H, W, 3]
    expected = _labels(5, 32, 48)  # validation: the first window
    painted = seg.any(axis=-1)
    np.testing.assert_array_equal(painted, expected > 0)
    colors = {tuple(seg[0][expected[0] == i][0]) for i in (1, 2)}
    assert len(colors) == 2  # one colour per object, constant over its mask
    assert all((seg[0][expected[0] == i] == seg[0][expected[0] == i][0]).all() for i in (1, 2))


def test_training_keeps_a_random_subset_of_objects():
    masks = np.zeros((5, 1, 4, 4), bool)
    counts = {len(C.sample_masks(masks, np.random.default_rng(seed))) for seed in range(60)}
    assert counts == {0, 1, 2, 3, 4, 5}


def _person(points):
    keypoints = np.zeros((133, 3), np.float32)
    for index, (x, y) in points.items():
        keypoints[index] = (x, y, 1.0)
    return keypoints


def test_keypoint_rendering_draws_links_between_confident_points():
    # Left shoulder (5) to left elbow (7): a link in OpenPose's colour for it; the right wrist (10) is unconfident.
    person = _person({5: (0.25, 0.25), 7: (0.75, 0.25)})
    person[10] = (0.5, 0.8, 0.3)
    image = C.render_keypoints(person[None, None], 32, 32)[0]
    assert image[8, 9:23].any(axis=-1).all()  # the link from (8, 8) to (24, 8)
    assert tuple(image[8, 16]) == (170, 255, 0)  # left upper arm
    assert not image[24:, :].any()  # the unconfident wrist leaves no mark
    # Both shoulders make a neck; neck-to-shoulder links are drawn in their own colours.
    both = _person({5: (0.75, 0.5), 6: (0.25, 0.5)})
    image = C.render_keypoints(both[None, None], 32, 32)[0]
    assert tuple(image[16, 12]) == (255, 0, 0) and tuple(image[16, 20]) == (255, 85, 0)
    assert len(C.HAND_LINKS) == 40


@pytest.mark.parametrize("fmt", ["npz", "cosmos_pickle"])
def test_keypoint_control_from_files(tmp_path, fmt):
    root = make_clip_folder(tmp_path, num_frames=12, size=(32, 48))
    os.makedirs(os.path.join(root, "keypoint"))
    person = _person({5: (0.2, 0.5), 6: (0.8, 0.5)})
    for stem in ("a", "b", "c"):
        if fmt == "npz":
            np.savez(os.path.join(root, "keypoint", stem + ".npz"), keypoints=np.tile(person, (12, 1, 1, 1)))
        else:  # Cosmos: {frame: [{'body-keypoints': [91, 3], 'hand-keypoints': [42, 3]}]}
            annotations = {t: [{"body-keypoints": person[:91], "hand-keypoints": person[91:]}] for t in range(12)}
            with open(os.path.join(root, "keypoint", stem + ".pickle"), "wb") as file:
                pickle.dump(annotations, file)
    ds = dataset(root, hint_keys=["keypoint"], resolution=(32, 48))
    skeleton = ds[0]["control_input_keypoint"]  # [3, T, H, W]
    row = skeleton[:, :, 16, 10:38].amax(dim=0)  # shoulder to shoulder line at y = 16, x from 10 to 38
    assert (row > 0).all()
    assert skeleton[:, :, :8].sum() == 0


def test_depth_control_is_read_frame_aligned(tmp_path):
    root = make_clip_folder(tmp_path, num_frames=12, size=(32, 48))
    for stem in ("a", "b", "c"):
        depth = np.zeros((12, 32, 48, 3), np.uint8)
        for t in range(12):
            depth[t] = 20 * t  # frame t has brightness 20 t: tells its index
        write_video(os.path.join(root, "depth", stem + ".mp4"), depth, 10.0, crf=0)
    ds = dataset(root, hint_keys=["depth"], resolution=(32, 48), num_frames=4)
    for key in [(0, 0), (1, 0), (2, 1)]:
        sample = ds[key]
        depth = sample["control_input_depth"][0, :, 16, 24].float()
        # The clip's red square starts at column 4 + 2 t: recover the window's first frame from the video.
        red = sample["video"][0, 0, 14].numpy()
        start = (int(np.nonzero(red > 150)[0][0]) - 4) // 2
        assert torch.allclose(depth, torch.tensor([20.0 * (start + i) for i in range(4)]), atol=3)


def test_missing_depth_file_skips_the_clip(tmp_path):
    root = make_clip_folder(tmp_path)
    write_video(os.path.join(root, "depth", "a.mp4"), np.zeros((12, 32, 48, 3), np.uint8), 10.0)
    write_video(os.path.join(root, "depth", "b.mp4"), np.zeros((12, 32, 48, 3), np.uint8), 10.0)
    ds = dataset(root, hint_keys=["depth"], max_bad_fraction=0.5)
    assert len(ds) == 2 and ds.bad_files[0][0].endswith("c.mp4") and "depth" in ds.bad_files[0][1]


def test_samples_are_deterministic_per_seed_epoch_and_index(tmp_path):
    root = make_clip_folder(tmp_path, num_frames=30)
    ds = dataset(root, hint_keys=["edge", "vis"], num_frames=4)
    first, again = ds[(3, 1)], ds[(3, 1)]
    for key in ("video", "control_input_edge", "control_input_vis"):
        assert torch.equal(first[key], again[key]), key
    other_seed = dataset(root, hint_keys=["edge", "vis"], num_frames=4, seed=1)
    differs = [not torch.equal(first["control_input_vis"], other_seed[(3, 1)]["control_input_vis"])]
    differs += [not torch.equal(first["video"], ds[(e, 1)]["video"]) for e in range(4, 8)]
    assert any(differs)  # windows or blur parameters change with the seed and the epoch
    # Validation mode: the first window and the named presets, whatever the epoch.
    val = dataset(root, hint_keys=["edge", "vis"], num_frames=4, is_train=False)
    assert torch.equal(val[(0, 1)]["control_input_vis"], val[(5, 1)]["control_input_vis"])


def test_unknown_hint_key():
    with pytest.raises(ValueError, match="unknown hint key 'control_input_lidar'"):
        normalize_hint_key("control_input_lidar")
