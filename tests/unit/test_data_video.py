"""Window and padding arithmetic of cosmos_transfer.data.video."""

import numpy as np
import pytest

from cosmos_transfer.data.video import (
    RESOLUTIONS,
    BadSampleError,
    fit_frame,
    frame_stride,
    padding_mask,
    reflect_pad,
    resolve_resolution,
    window_indices,
    window_start_range,
)


def test_frame_stride_hits_the_target_fps():
    assert frame_stride(30.0, 30.0) == 1
    assert frame_stride(30.0, 10.0) == 3
    assert frame_stride(60.0, 24.0) == 2  # 2.5 rounds to 2 (banker's rounding): 30 fps, the closest from above
    assert frame_stride(24.0, 30.0) == 1  # never faster than the clip
    assert frame_stride(25.0, None) == 1


def test_window_start_range_and_indices():
    assert window_start_range(121, 121, 1) == 1
    assert window_start_range(120, 121, 1) == 0
    assert window_start_range(100, 10, 3) == 100 - 28 + 1
    assert window_indices(5, 4, 3) == [5, 8, 11, 14]


@pytest.mark.parametrize(
    "frame, target, valid",
    [
        ((1080, 1920), (704, 1280), (704, 1252)),  # 16:9 into Cosmos' 720p: 28 columns of padding
        ((720, 1280), (704, 1280), (704, 1252)),
        ((480, 640), (704, 1280), (704, 939)),  # 4:3: the height fills, the width is padded
        ((64, 64), (64, 64), (64, 64)),
        ((32, 24), (64, 64), (64, 48)),  # small frames are scaled up
    ],
)
def test_fit_frame_keeps_the_aspect_ratio(frame, target, valid):
    fit = fit_frame(*frame, target)
    assert (fit.valid_height, fit.valid_width) == valid
    assert fit.top + fit.valid_height + fit.bottom == target[0]
    assert fit.left + fit.valid_width + fit.right == target[1]
    assert abs(fit.left - fit.right) <= 1 and abs(fit.top - fit.bottom) <= 1


def test_portrait_into_landscape_cannot_be_padded():
    with pytest.raises(BadSampleError, match="1920x1080 cannot be reflection-padded to 704x1280"):
        fit_frame(1920, 1080, (704, 1280))


def test_reflect_pad_and_mask():
    fit = fit_frame(4, 6, (4, 10))  # 2 columns of padding each side
    frames = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(1, 4, 6, 3)
    padded = reflect_pad(frames, fit)
    assert padded.shape == (1, 4, 10, 3)
    np.testing.assert_array_equal(padded[0, :, 2:8], frames[0])
    np.testing.assert_array_equal(padded[0, :, 1], frames[0, :, 1])  # mirror without repeating the edge
    np.testing.assert_array_equal(padded[0, :, 0], frames[0, :, 2])
    np.testing.assert_array_equal(padded[0, :, 9], frames[0, :, 3])
    mask = padding_mask(fit)
    assert mask.shape == (1, 4, 10) and mask.dtype == np.float32
    assert mask[0, 0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]


def test_resolutions():
    assert resolve_resolution("720") == (704, 1280)
    assert resolve_resolution([64, 96]) == (64, 96)
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in RESOLUTIONS.values())
    with pytest.raises(ValueError, match="unknown resolution '1080'"):
        resolve_resolution("1080")


@pytest.mark.parametrize("frame, target", [((4, 6), (4, 10)), ((6, 4), (10, 4)), ((5, 7), (9, 11)), ((2, 2), (2, 3)),
                                           ((2, 2), (3, 2)), ((9, 5), (9, 13)), ((20, 10), (40, 30))])  # fmt: skip
def test_reflect_pad_matches_numpy(frame, target):
    fit = fit_frame(*frame, target)
    frames = np.random.default_rng(0).integers(0, 255, (2, fit.valid_height, fit.valid_width, 3), dtype=np.uint8)
    expected = np.pad(frames, ((0, 0), (fit.top, fit.bottom), (fit.left, fit.right), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(reflect_pad(frames, fit), expected)
