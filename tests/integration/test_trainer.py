"""The trainer end to end on the toy model (tests/trainer_toy.py): 2 processes under torchrun with gloo.

The runs are shared between assertions (a module-scoped fixture) to keep the number of torchrun launches small:
  reference  30 uninterrupted iterations, checkpoints every 10, validation every 10, keep the last 2
  crashed    same job, rank 1 dies while writing the checkpoint of iteration 20; then rerun to the end
  preempted  same job, SIGTERM at iteration 13 (exit 0, checkpoint); then rerun to the end with async saves
  async_20   a copy of "preempted" rewound to its asynchronously written iteration-20 checkpoint, rerun to the end
             with selective activation checkpointing (so it also shows that recomputing gives the same numbers)
One-process runs start warm (tests/helpers.run_python).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from safetensors.torch import load_file
from tests.helpers import ROOT, check, latest, losses, metrics, run_python, run_toy, val_losses

# Two optimizer parameter groups (the norms at half the rate), so that every resume below restores grouped state.
BASE = {"max_iter": 30, "save_iter": 10, "validation_iter": 10, "keep_last_k": 2, "val_loader": True,
        "lr_multipliers": {"net.blocks.*.norm.*": 0.5}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    jobs = {name: root / name for name in ("reference", "crashed", "preempted")}
    out = {"root": root, **jobs}
    out["reference_run"] = check(run_toy({**BASE, "job_dir": str(jobs["reference"])}))

    out["crash_run"] = run_toy({**BASE, "job_dir": str(jobs["crashed"]), "crash_in_save_at": 20})
    out["crash_latest"] = latest(jobs["crashed"])
    out["crash_listing"] = sorted(os.listdir(jobs["crashed"] / "checkpoints"))
    out["crash_resume_run"] = check(run_toy({**BASE, "job_dir": str(jobs["crashed"])}))

    out["preempt_run"] = run_toy({**BASE, "job_dir": str(jobs["preempted"]), "signal_at": 13})
    out["preempt_latest"] = latest(jobs["preempted"])
    out["preempt_resume_run"] = check(run_toy({**BASE, "job_dir": str(jobs["preempted"]), "async_save": True}))

    # Training went on (parameters changed in place) while iteration 20 was written in the background: resuming
    # from it must still give the reference losses, i.e. the async save captured the state of iteration 20. The
    # rerun recomputes activations in backward (selective activation checkpointing; the reference stored them):
    # equal losses show that too, as iterations 21-30 depend on the gradients of 20-29.
    out["async_20"] = root / "async_20"
    shutil.copytree(jobs["preempted"], out["async_20"])
    shutil.rmtree(out["async_20"] / "checkpoints" / "iter_000000030")
    (out["async_20"] / "checkpoints" / "latest_checkpoint.txt").write_text("iter_000000020\n")
    check(run_toy({**BASE, "job_dir": str(out["async_20"]), "activation_checkpointing": "selective"}))
    return out


def test_training_runs_and_loss_falls(runs):
    values = losses(runs["reference"])
    assert sorted(values) == list(range(1, 31))
    first, last = sum(values[i] for i in range(1, 6)) / 5, sum(values[i] for i in range(26, 31)) / 5
    assert last < 0.6 * first, (first, last)


def test_metrics_jsonl_has_one_line_per_iteration_with_the_promised_fields(runs):
    lines = [m for m in metrics(runs["reference"]) if "event" not in m]
    for key in ("iteration", "loss", "mse", "lr", "grad_norm", "step_time_s", "data_wait_s", "skipped_samples",
                "skipped_steps", "tokens_per_s", "tflops_per_s", "mfu", "peak_memory_gb"):
        assert key in lines[0], key
    assert lines[0]["mfu"] is None  # no known peak on CPU: not reported rather than invented
    assert lines[0]["tflops_per_s"] > 0 and lines[0]["tokens_per_s"] > 0 and lines[0]["peak_memory_gb"] > 0
    # lambda_linear warm-up of the toy config: 3 steps from 0.1 x lr to lr
    assert [round(m["lr"] / 3e-3, 6) for m in lines[:4]] == [0.1, 0.4, 0.7, 1.0]
    assert (runs["reference"] / "tensorboard").is_dir()
    assert "iter 20 | loss" in runs["reference_run"].stderr  # the LossLine callback


def test_validation_writes_samples_and_val_loss(runs):
    samples = runs["reference"] / "samples"
    for iteration in (10, 20, 30):
        assert (samples / f"iter_{iteration:09d}.mp4").stat().st_size > 0
        assert (samples / f"iter_{iteration:09d}_grid.gif").stat().st_size > 0
    from cosmos_transfer.video_io import read_video

    grid, _ = read_video(samples / "iter_000000030_grid.gif")
    assert grid.shape[1:] == (4, 12, 3)  # control | generated | ground truth, 4x4 each
    val = [m for m in metrics(runs["reference"]) if m.get("event") == "val"]
    assert [m["iteration"] for m in val] == [10, 20, 30] and all(m["loss"] > 0 for m in val)


def test_checkpoints_layout_and_keep_last_k(runs):
    folder = runs["reference"] / "checkpoints"
    assert sorted(os.listdir(folder)) == ["iter_000000020", "iter_000000030", "latest_checkpoint.txt"]
    assert latest(runs["reference"]) == "iter_000000030"
    names = os.listdir(folder / "iter_000000030")
    assert ".metadata" in names and "trainer_state_rank0.json" in names and "trainer_state_rank1.json" in names


def test_a_process_killed_during_a_save_leaves_a_resumable_checkpoint(runs):
    assert runs["crash_run"].returncode != 0
    assert runs["crash_latest"] == "iter_000000010"  # the interrupted save never became "latest"
    assert "iter_000000020" not in runs["crash_listing"]
    assert "resumed from" in runs["crash_resume_run"].stderr + runs["crash_resume_run"].stdout


def test_resume_reproduces_the_uninterrupted_losses_bitwise(runs):
    reference = losses(runs["reference"])
    assert losses(runs["crashed"]) == reference  # resumed at 10 after the crash
    assert losses(runs["preempted"]) == reference  # resumed at 13 after SIGTERM, then saved asynchronously
    assert val_losses(runs["crashed"]) == val_losses(runs["preempted"]) == val_losses(runs["reference"])


def test_an_async_checkpoint_holds_the_state_of_its_own_iteration(runs):
    assert losses(runs["async_20"]) == losses(runs["reference"])
    assert val_losses(runs["async_20"]) == val_losses(runs["reference"])


def test_activation_checkpointing_recomputes_the_same_numbers(runs):
    reference = losses(runs["reference"])
    # Resuming at 20 dropped the copied lines past 20 (trainer/logging.py): those left are the rerun's.
    recomputed = {i: loss for i, loss in losses(runs["async_20"]).items() if i > 20}
    assert sorted(recomputed) == list(range(21, 31))
    assert recomputed == {i: reference[i] for i in range(21, 31)}, \
        "iterations 21-30 under selective activation checkpointing differ from the reference; this run also resumed " \
        "from an async checkpoint: if test_compile_ac's activation-checkpointing gradients agree, look there"


def test_sigterm_saves_at_the_step_boundary_and_exits_0(runs):
    assert runs["preempt_run"].returncode == 0, runs["preempt_run"].stderr[-3000:]
    assert runs["preempt_latest"] == "iter_000000013"
    assert "SIGTERM" in runs["preempt_run"].stderr
    assert latest(runs["preempted"]) == "iter_000000030"  # the async saves of the rerun were published


def test_resume_with_one_process_from_a_two_process_checkpoint(runs):
    job = runs["root"] / "one_process"
    shutil.copytree(runs["reference"], job)
    result = check(run_toy({**BASE, "job_dir": str(job), "max_iter": 33}, nproc=1))
    assert "saved by 2 ranks on 1" in result.stderr + result.stdout
    values = losses(job)
    assert sorted(values) == list(range(1, 34))
    assert all(values[i] < 0.2 for i in (31, 32, 33))  # continues from trained weights, not from scratch


def test_resume_with_other_lr_multipliers_is_refused_with_a_clear_message(runs):
    job = runs["root"] / "other_multipliers"
    shutil.copytree(runs["reference"], job)
    result = run_toy({**BASE, "job_dir": str(job), "max_iter": 33, "lr_multipliers": {"net.blocks.*.norm.*": 0.25}},
                     nproc=1)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert "trainer.lr_multipliers is {'net.blocks.*.norm.*': 0.25}" in output
    assert "iter_000000030 was saved with {'net.blocks.*.norm.*': 0.5}" in output
    assert "Set it back to resume this job" in output
    assert latest(job) == "iter_000000030"  # nothing was written


def test_resume_with_another_model_shape_names_the_checkpoint_and_what_to_do(runs):
    job = runs["root"] / "other_width"
    shutil.copytree(runs["reference"], job)
    result = run_toy({**BASE, "job_dir": str(job), "max_iter": 33, "dim": 48}, nproc=1)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    output = result.stderr + result.stdout
    assert f"cannot resume from {job / 'checkpoints' / 'iter_000000030'}: it holds another model" in output
    assert "net.x_embedder.weight: the checkpoint (32, 97), this run (48, 97)" in output  # names the tensor
    assert "start a new job" in output
    assert latest(job) == "iter_000000030"


def test_a_trainable_layer_without_gradients_resumes_bitwise(runs):
    """A trainable parameter that never got a gradient (a layer the forward skips) has no optimizer state; its
    checkpoint was saved without it and could not be loaded ("Missing key"). 2 ranks, FSDP2: resumed at 2, the
    losses to 4 are the uninterrupted run's, bit for bit."""
    options = {"max_iter": 4, "save_iter": 2, "unused_layer": True}
    reference, resumed = runs["root"] / "unused_reference", runs["root"] / "unused_resumed"
    check(run_toy({**options, "job_dir": str(reference)}))
    check(run_toy({**options, "job_dir": str(resumed), "max_iter": 2}))
    result = run_toy({**options, "job_dir": str(resumed)})
    check(result)
    assert "resumed from" in result.stderr + result.stdout
    assert losses(resumed) == losses(reference) and sorted(losses(reference)) == [1, 2, 3, 4]


def test_a_checkpoint_with_the_older_optimizer_groups_resumes_bitwise(runs):
    """Checkpoints written before the groups were split by tensor kind hold a plain parameter (the logvar head) in a
    group with FSDP2's DTensors. The trainer rebuilds that optimizer (per tensor, as it was trained) instead of
    failing on 'Missing key ... param_groups.2': resumed at 2 and again at 3, the old trainer's own losses, bitwise.
    A new job with such a parameter gets split groups and fused AdamW, and resumes as well."""
    options = {"max_iter": 4, "save_iter": 1, "outside_param": True, "lr_multipliers": {"net.blocks.*": 0.5}}
    reference, resumed = runs["root"] / "old_groups_reference", runs["root"] / "old_groups_resumed"
    check(run_toy({**options, "job_dir": str(reference), "old_optimizer_groups": True}, nproc=1))
    check(run_toy({**options, "job_dir": str(resumed), "max_iter": 2, "old_optimizer_groups": True}, nproc=1))
    for max_iter in (3, 4):  # and again from the checkpoint this trainer wrote
        result = check(run_toy({**options, "job_dir": str(resumed), "max_iter": max_iter}, nproc=1))
        assert "saved with the optimizer's older parameter groups" in result.stderr + result.stdout
    assert losses(resumed) == losses(reference) and sorted(losses(reference)) == [1, 2, 3, 4]

    split_reference, split_resumed = runs["root"] / "split_reference", runs["root"] / "split_resumed"
    check(run_toy({**options, "job_dir": str(split_reference)}, nproc=1))
    check(run_toy({**options, "job_dir": str(split_resumed), "max_iter": 2}, nproc=1))  # saved at 1 and 2
    result = check(run_toy({**options, "job_dir": str(split_resumed)}, nproc=1))
    assert "older parameter groups" not in result.stderr + result.stdout
    assert losses(split_resumed) == losses(split_reference)


def test_nan_guard_skips_steps_then_stops_without_saving_the_diverged_state(runs):
    job = runs["root"] / "nan"
    result = run_toy({"job_dir": str(job), "max_iter": 20, "save_iter": 100, "nan_after_steps": 4,
                      "max_nan_steps": 3}, nproc=1)
    assert result.returncode != 0
    assert "3 consecutive iterations had a NaN/Inf loss" in result.stderr
    assert "No checkpoint was saved before: rerunning starts from the beginning" in result.stderr
    lines = {m["iteration"]: m for m in metrics(job)}
    assert [lines[i]["skipped_step"] for i in range(1, 8)] == [False] * 4 + [True] * 3
    assert lines[7]["skipped_steps"] == 3
    assert not (job / "checkpoints" / "latest_checkpoint.txt").exists()  # see test_checkpoint_safety.py


def test_export_to_safetensors_and_reload_through_load_path(runs):
    exported = runs["root"] / "reference.safetensors"
    result = run_python([str(ROOT / "scripts/export_checkpoint.py"), str(runs["reference"] / "checkpoints"),
                         "--out", str(exported)], timeout=120)
    assert result.returncode == 0, result.stderr
    weights = load_file(exported)
    assert "net.blocks.block0.mlp.0.weight" in weights and not any(k.startswith("tokenizer") for k in weights)
    # Fine-tune for one step at lr 0 from the file and from the DCP folder: the weights come back unchanged.
    for name, source in (("from_file", exported), ("from_dcp", runs["reference"] / "checkpoints" / "iter_000000030")):
        job = runs["root"] / name
        check(run_toy({"job_dir": str(job), "max_iter": 1, "lr": 0.0, "load_path": str(source)}, nproc=1))
        again = runs["root"] / f"{name}.safetensors"
        check(run_python([str(ROOT / "scripts/export_checkpoint.py"), str(job / "checkpoints"), "--out", str(again)],
                         timeout=120))
        reloaded = load_file(again)
        assert reloaded.keys() == weights.keys()
        assert all((reloaded[k] == weights[k]).all() for k in weights), name


def test_a_config_without_data_says_which_group_to_choose():
    from cosmos_transfer.config.lazy import LazyDict
    from cosmos_transfer.config.schema import Config
    from cosmos_transfer.trainer.trainer import Trainer

    config = Config(model=LazyDict({"_target_": "x"}), optimizer=LazyDict({"_target_": "y"}))  # no data option
    with pytest.raises(ValueError, match="config.dataloader_train is not set: choose a `data_train` option"):
        Trainer(config, device=None)


def test_gradient_accumulation_consumes_one_batch_per_micro_step(runs):
    job = runs["root"] / "accumulate"
    check(run_toy({"job_dir": str(job), "max_iter": 3, "save_iter": 100, "grad_accum_iter": 2}, nproc=1))
    assert sorted(losses(job)) == [1, 2, 3]
    state = json.loads((job / "checkpoints" / "iter_000000003" / "trainer_state_rank0.json").read_text())
    assert state["data"]["loader"]["consumed"] == 3 * 2 * 4  # iterations x micro-batches x batch size


def test_the_fused_choice_is_the_optimizer_options_field(monkeypatch):
    """`fused: null` (the AdamW option) runs fused on every device; true/false, or an option without the field, are
    kept."""
    import types

    import torch

    from cosmos_transfer.config.lazy import LazyDict
    from cosmos_transfer.config.schema import Config
    from cosmos_transfer.trainer import trainer as trainer_module

    passed = {}

    def fake_instantiate(config, **kwargs):
        passed.clear()
        passed.update(kwargs)
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    monkeypatch.setattr(trainer_module, "instantiate", fake_instantiate)
    monkeypatch.setattr(trainer_module, "lr_param_groups", lambda model, params, multipliers: [])
    for device, options, expected in [
        ("cuda", {"fused": None}, True),
        ("cpu", {"fused": None}, True),
        ("cpu", {"fused": False}, "absent"),
        ("cuda", {"fused": False}, "absent"),
        ("cuda", {}, "absent"),  # an optimizer without a fused argument
    ]:
        config = Config(optimizer=LazyDict({"_target_": "torch.optim.AdamW", "lr": 1e-3, **options}))
        trainer = types.SimpleNamespace(device=torch.device(device), config=config, model=None, params=[],
                                        multipliers=None)
        trainer_module.Trainer._build_optimizer(trainer)
        assert passed.get("fused", "absent") == expected, (device, options)
