"""What a training run prints (issue 16, item 5): a start-up summary, one line per validation and per checkpoint, an
exit line; no FSDP2 view-tensor warning; a progress bar only on a terminal, ended once before the exit line."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
from tests.helpers import REPO_DIR as ROOT

TRAIN = os.path.join(ROOT, "scripts", "train.py")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Train and val folders for ctrl_tiny: 17 frames at 32x32, MiniLM-sized (384) caption embeddings."""
    from tests.tiny_datasets import make_tiny_dataset

    base = tmp_path_factory.mktemp("console_clips")
    for split, stems in (("train", ("a", "b", "c", "d")), ("val", ("e",))):
        root = make_tiny_dataset(base / split, stems=stems, num_frames=17, size=(32, 32), text_dim=384)
        os.rename(os.path.join(root, "t5_xxl"), os.path.join(root, "minilm_l6"))
    return base


def _train(clips, output_root, max_iter, stderr=None):
    # ctrl_tiny (tiny base + one edge branch, pixel tokenizer) read at 32 x 32: a few seconds per run
    args = [sys.executable, TRAIN, "--", "experiment=ctrl_tiny", f"trainer.max_iter={max_iter}",
            "dataloader_train.dataset.resolution=[32,32]", "dataloader_val.dataset.resolution=[32,32]",
            "trainer.validation_iter=2", "checkpoint.save_iter=2", "trainer.sample_num_steps=2",
            "trainer.validation_num_batches=1", f"dataloader_train.dataset.root={clips / 'train'}",
            f"dataloader_val.dataset.root={clips / 'val'}"]
    env = {**os.environ, "OUTPUT_ROOT": str(output_root)}
    return subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=stderr if stderr is not None else subprocess.PIPE, text=True, timeout=300)


def test_console_lines_of_a_run_and_its_resume(clips, tmp_path):
    result = _train(clips, tmp_path, max_iter=3)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stderr
    job = os.path.join(str(tmp_path), "cosmos_transfer", "ctrl_tiny", "ctrl_tiny")
    assert f"job folder   {job}" in out
    assert "start        new run, initial weights; training to iteration 3" in out
    assert f"clips        train 4 in {clips / 'train'}; validation 1 in {clips / 'val'}" in out
    assert re.search(r"parameters   [\d.,]+( M)? trainable, [\d.,]+( M)? frozen", out)
    # 17 frames x 32 x 32 -> pixel tokenizer 17 x 8 x 8 -> patches of 2 x 2: 17 x 4 x 4 tokens, batch 1
    assert "tokens/step  272 (1 clip(s) of 17 frames at 32x32 per rank, x 1 accumulation x 1 rank(s))" in out
    assert "world        1 rank(s) on cpu" in out
    samples = os.path.join(job, "samples", "iter_000000002.mp4")
    assert re.search(r"validation at iteration 2: loss -?[\d.]+, mse [\d.]+; samples " + re.escape(samples), out)
    assert os.path.isfile(samples)
    for iteration in (2, 3):
        assert re.search(rf"checkpoint at iteration {iteration} saved to "
                         + re.escape(os.path.join(job, "checkpoints", f"iter_{iteration:09d}"))
                         + r" at \d\d:\d\d:\d\d \([\d.]+ s\)", out)
    last = out.strip().splitlines()[-1]
    assert last.startswith("finished at iteration 3 of 3: 3 iteration(s) in ") and "iter_000000003" in last
    assert "returned a view tensor" not in out and "pre-backward hook" not in out  # the FSDP2 warning is gone
    assert "train:" not in out  # no progress bar in a log (not a terminal)

    resumed = _train(clips, tmp_path, max_iter=4)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"start        resumed from {os.path.join(job, 'checkpoints', 'iter_000000003')} (iteration 3)" \
        in resumed.stderr
    assert resumed.stderr.strip().splitlines()[-1].startswith("finished at iteration 4 of 4: 1 iteration(s)")


def test_progress_bar_on_a_terminal_ends_before_the_exit_line(clips, tmp_path):
    """On a terminal the bar is drawn; once closed it is not drawn again (the old close() repeated it last)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    try:
        result = _train(clips, tmp_path, max_iter=2, stderr=terminal)
    finally:
        os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # the terminal side is closed and drained
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    out = b"".join(chunks).decode("utf-8", "replace")
    assert result.returncode == 0, out[-3000:]
    assert "train:" in out and "2/2" in out
    exit_at = out.index("finished at iteration 2 of 2")
    assert "train:" not in out[exit_at:], out[exit_at:]
