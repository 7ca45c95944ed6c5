"""scripts/evaluate.py: JSON metrics from files, the spec route, and clear errors."""

import importlib.util
import json
import re
import os

import numpy as np
import pytest

from cosmos_transfer.metrics import PSNR_CAP, canny_edges
from cosmos_transfer.video_io import write_video
from tests.helpers import REPO_DIR as ROOT



def _load_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", os.path.join(ROOT, "scripts", "evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluate = _load_script()


def _squares(num_frames=4, size=32, shift=0):
    video = np.full((num_frames, size, size, 3), 40, np.uint8)
    for t in range(num_frames):
        video[t, 8:24, 6 + t + shift : 22 + t + shift] = 220
    return video


@pytest.fixture
def videos(tmp_path):
    paths = {}
    for name, frames in {
        "input": _squares(),
        "same": _squares(),
        "shifted": _squares(shift=3),
        "flat": np.full((4, 32, 32, 3), 40, np.uint8),
        "short": _squares(num_frames=3),
    }.items():
        paths[name] = str(tmp_path / f"{name}.mp4")
        write_video(paths[name], frames, fps=8, crf=0, pix_fmt="yuv444p")
    edges = canny_edges(_squares(), "medium")
    paths["edge"] = str(tmp_path / "edge.mp4")
    write_video(paths["edge"], np.repeat(edges[..., None], 3, -1).astype(np.uint8) * 255, fps=8, crf=0,
                pix_fmt="yuv444p")
    return paths


def test_metrics_json_for_matching_shifted_and_flat_videos(videos, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert evaluate.main(["--video", videos["same"], "--input_video", videos["input"], "--ground_truth",
                          videos["input"], "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    metrics = report["metrics"]
    assert metrics["edge_f1"] == pytest.approx(1.0)
    assert metrics["blur_ssim"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["psnr"] == PSNR_CAP and metrics["ssim"] == pytest.approx(1.0)
    assert report["num_frames"] == 4

    def f1(name):
        assert evaluate.main(["--video", videos[name], "--edge_video", videos["edge"]]) == 0
        return json.loads(capsys.readouterr().out)["metrics"]["edge_f1"]

    assert f1("same") == pytest.approx(1.0)
    assert 0.0 < f1("shifted") < 0.9
    assert f1("flat") == 0.0


def test_spec_supplies_input_and_edge_control(videos, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"prompt": "squares", "input_video_path": videos["input"],
                                "edge": {"input_control": videos["edge"]}}))
    assert evaluate.main(["--video", videos["shifted"], "--spec", str(spec)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["edge_video"] == videos["edge"] and report["input_video"] == videos["input"]
    assert set(report["metrics"]) == {"edge_f1", "blur_ssim"}
    assert report["metrics"]["blur_ssim"] < 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda v: ["--video", v["same"] + ".missing", "--input_video", v["input"]], "video file not found: .*same.mp4.missing"),
        (lambda v: ["--video", v["short"], "--input_video", v["input"]], "has 4 frames but the generated video has 3"),
        (lambda v: ["--video", v["same"]], "nothing to compare against"),
    ],
)
def test_errors_exit_2_with_a_message(videos, capsys, args, message):
    assert evaluate.main(args(videos)) == 2


    assert re.search(message, capsys.readouterr().err)


def test_an_out_that_is_an_input_is_refused(videos, capsys, tmp_path):
    """--out over the generated video (or an input) used to replace that video with the JSON."""
    before = open(videos["same"], "rb").read()
    for out, label in ((videos["same"], "--video"), (videos["input"], "--input_video")):
        assert evaluate.main(["--video", videos["same"], "--input_video", videos["input"], "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("evaluate: error: ") and f"--out '{out}' is {label} '{out}'" in err, err
    assert open(videos["same"], "rb").read() == before
    deep = tmp_path / "deep.json"
    deep.write_text("{\"a\": " * 50_000 + "1" + "}" * 50_000)
    assert evaluate.main(["--video", videos["same"], "--spec", str(deep)]) == 2
    assert "its JSON is nested too deeply to read" in capsys.readouterr().err
