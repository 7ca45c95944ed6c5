"""Context parallelism (trainer/context_parallel.py) on 2 gloo ranks under torchrun: one sample's tokens split over
the ranks give the loss and the gradients of the unsplit computation, for both families with and without the control
branch, alone and under FSDP2 on the dp x cp mesh (with full activation checkpointing); the trainer with
trainer.context_parallel_size=2 on 2 ranks follows the 1-rank run's losses."""

import json
import subprocess
import sys

import pytest
from tests.helpers import ROOT, check, losses, subprocess_env

RUNNER = str(ROOT / "tests" / "context_parallel_run.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _run(command, timeout=240):
    return check(subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                                env=subprocess_env()))


@pytest.mark.slow
def test_split_tokens_give_the_single_rank_loss_and_gradients(tmp_path):
    out = tmp_path / "equality.json"
    _run(TORCHRUN + [RUNNER, "equality", str(out), "t1_base,t1_ctrl,v25_base,v25_ctrl"])
    results = json.loads(out.read_text())
    assert len(results) == 8
    for case, r in results.items():
        assert r["same_names"] and r["num_gradients"] > 20, case
        assert r["num_nonzero"] == r["num_gradients"], case  # random weights: every parameter's gradient counts
        assert r["loss"] == pytest.approx(r["reference_loss"], rel=1e-6, abs=0), case
        assert r["worst_relative_gradient_error"] < 1e-5, (case, r)  # float32 rounding (measured: <= 6e-7)


@pytest.mark.slow
def test_trainer_with_context_parallel_follows_the_one_rank_run(tmp_path):
    one, split = tmp_path / "p" / "g" / "one", tmp_path / "p" / "g" / "cp2"
    _run([sys.executable, RUNNER, "train", json.dumps({"job_dir": str(one), "max_iter": 3})])
    _run(TORCHRUN + [RUNNER, "train", json.dumps({"job_dir": str(split), "max_iter": 3, "cp": 2})])
    reference, got = losses(one), losses(split)
    assert sorted(got) == [1, 2, 3]
    # One data-parallel rank in both runs: the same batches, noise and optimizer steps (clipping, AdamW) follow.
    for iteration, loss in reference.items():
        assert got[iteration] == pytest.approx(loss, rel=1e-5), iteration


def test_resuming_with_another_context_parallel_size_is_one_paragraph(tmp_path):
    """The ranks regroup (2 data-parallel ranks become one group of 2): the saved per-rank data positions and noise
    streams belong to other ranks. Refused naming the setting, exit 2, not the data sampler's traceback per rank."""
    job = tmp_path / "p" / "g" / "job"
    _run(TORCHRUN + [RUNNER, "train", json.dumps({"job_dir": str(job), "max_iter": 1, "save_iter": 1})])
    result = subprocess.run(TORCHRUN + [RUNNER, "train", json.dumps({"job_dir": str(job), "max_iter": 2, "cp": 2})],
                            capture_output=True, text=True, timeout=240, cwd=ROOT, env=subprocess_env())
    assert result.returncode != 0 and "[rank0]: Traceback" not in result.stderr, result.stderr[-3000:]
    assert "trainer.context_parallel_size is 2, but" in result.stderr and "saved with 1" in result.stderr
