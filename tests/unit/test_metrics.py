"""Metrics against hand-computed cases."""

import math

import numpy as np
import pytest

from cosmos_transfer.metrics import (
    PSNR_CAP,
    blur_ssim,
    canny_edges,
    edge_f1,
    evaluate_video,
    f1_score,
    psnr,
    ssim,
)


def _square_video(num_frames=3, size=48, offset=0):
    """A white square on black: its Canny edges are the square's outline."""
    video = np.zeros((num_frames, size, size, 3), np.uint8)
    video[:, 12 + offset : 36 + offset, 12 + offset : 36 + offset] = 255
    return video


def test_psnr_hand_computed():
    reference = np.zeros((2, 4, 4, 3), np.uint8)
    video = reference.copy()
    video[0] = 10  # MSE 100 in frame 0; frame 1 identical
    expected_frame0 = 10 * math.log10(255**2 / 100)
    assert psnr(video, reference) == pytest.approx((expected_frame0 + PSNR_CAP) / 2)
    assert psnr(reference, reference) == PSNR_CAP


def test_ssim_of_constant_images_is_the_luminance_term():
    a = np.full((1, 16, 16, 3), 100, np.uint8)
    b = np.full((1, 16, 16, 3), 50, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 50 + c1) / (100**2 + 50**2 + c1)  # variances and covariance are 0
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)


def test_ssim_falls_with_noise_and_is_symmetric():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (2, 24, 24, 3)).astype(np.uint8)
    light = np.clip(clean + rng.normal(0, 5, clean.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(clean + rng.normal(0, 40, clean.shape), 0, 255).astype(np.uint8)
    assert ssim(clean, clean) == pytest.approx(1.0)
    assert 1.0 > ssim(clean, light) > ssim(clean, heavy) > 0.0
    assert ssim(clean, heavy) == pytest.approx(ssim(heavy, clean))


def test_f1_hand_computed():
    predicted = np.array([1, 1, 1, 0, 0], bool)
    target = np.array([1, 0, 0, 1, 0], bool)
    # TP = 1, FP = 2, FN = 1 -> 2 / (2 + 2 + 1)
    assert f1_score(predicted, target) == pytest.approx(0.4)
    assert f1_score(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert f1_score(np.zeros(3, bool), np.ones(3, bool)) == 0.0


def test_edge_f1_same_shifted_and_blank():
    video = _square_video()
    edges = canny_edges(video, "medium")
    assert edges.any()
    control = np.repeat(edges[..., None], 3, axis=-1).astype(np.uint8) * 255
    assert edge_f1(video, control) == pytest.approx(1.0)
    assert 0.0 < edge_f1(_square_video(offset=1), control) < 1.0
    assert edge_f1(np.zeros_like(video), control) == 0.0


def test_blur_ssim_ignores_fine_detail_that_ssim_sees():
    rng = np.random.default_rng(1)
    base = np.repeat(np.linspace(0, 255, 64, dtype=np.float64)[None, None, :, None], 64, axis=1)
    base = np.repeat(np.repeat(base, 3, axis=-1), 2, axis=0).astype(np.uint8)
    detailed = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    assert blur_ssim(base, base) == pytest.approx(1.0)
    assert blur_ssim(detailed, base) > ssim(detailed, base) + 0.2


def test_evaluate_video_picks_metrics_from_references_and_resizes():
    video = _square_video(size=48)
    big_input = _square_video(size=96)
    big_input[:, 24:72, 24:72] = 255  # the same square at twice the size
    results = evaluate_video(video, input_video=big_input, ground_truth=video)
    assert set(results) == {"edge_f1", "blur_ssim", "psnr", "ssim"}
    assert results["psnr"] == PSNR_CAP and results["ssim"] == pytest.approx(1.0)
    assert results["edge_f1"] > 0.5
    assert set(evaluate_video(video, ground_truth=video)) == {"psnr", "ssim"}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: psnr(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 4, 5, 3), np.uint8)), "same shape"),
        (lambda: ssim(np.zeros((1, 4, 4, 3), np.float32), np.zeros((1, 4, 4, 3), np.float32)), "uint8"),
        (lambda: psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)), r"\[T, H, W, 3\]"),
        (lambda: canny_edges(_square_video(), "extreme"), "unknown Canny threshold preset 'extreme'"),
        (lambda: evaluate_video(_square_video(3), input_video=_square_video(4)), "has 4 frames"),
        (lambda: evaluate_video(_square_video(3)), "nothing to compare against"),
    ],
)
def test_bad_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
