"""Runs the trainer on the toy model (tests/trainer_toy.py); launched by the trainer tests under torchrun or python.

    torchrun --nproc_per_node=2 tests/trainer_toy_run.py '{"job_dir": "...", "max_iter": 30, ...}'

Fault injection for the tests (test-only, patched in here, never in the library):
  "crash_in_save_at": N    rank 1 dies (os._exit) while DCP writes the checkpoint of iteration N
  "signal_at": N           rank 1 sends itself SIGTERM during iteration N (as a scheduler would)
  "step_sleep_s": S        every training step takes S seconds longer (so that a test can signal torchrun mid-run)
  "hold_at": N             every rank waits after iteration N until <job_dir>/release exists (a run the test keeps
                           mid-training for as long as it needs, then lets finish at full speed)
  "slow_validation_s": S   each validation sample takes S seconds to load; the first one touches
                           <job_dir>/validation_started (a validation pass that outlasts torchrun's shutdown timeout)
  "slow_sampling_s": S     each network call of the validation sampler takes S seconds longer; the first one touches
                           <job_dir>/sampling_started
  "slow_publish_s": S      rank 0 takes S seconds longer to publish each checkpoint (rename + latest_checkpoint.txt);
                           every rank writes the time it leaves train() to <job_dir>/left_rank<r>
Other options: "num_workers" (data-loader worker processes per rank), "validation_num_batches", "unused_layer" (a
trainable layer the forward never uses), "outside_param" (a trainable logvar head outside the network),
"old_optimizer_groups" (the trainer as it was before parameter groups were split by tensor kind: mixed groups, per-
tensor AdamW, no "optimizer_groups" in the trainer state), "lora_rank" (LoRA adapters of that rank on the blocks' first
MLP layers), "frozen_block0" (net.blocks.block0 frozen: with "load_path", a lean post-training of the rest).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from cosmos_transfer.config.lazy import LazyCall as L  # noqa: E402
from cosmos_transfer.config.schema import CheckpointConfig, Config, JobConfig, TrainerConfig  # noqa: E402
from cosmos_transfer.data.sampler import build_dataloader  # noqa: E402
from cosmos_transfer.trainer import schedulers  # noqa: E402
from cosmos_transfer.trainer import trainer as trainer_module  # noqa: E402
from trainer_toy import ToyDiffusionModel, ToyVideoDataset  # noqa: E402


class SlowValidationDataset(ToyVideoDataset):
    """ToyVideoDataset whose samples take `delay_s` each; the first read leaves a marker file for the test."""

    def __init__(self, marker: str, delay_s: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.marker, self.delay_s = marker, delay_s

    def __getitem__(self, key):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
        time.sleep(self.delay_s)
        return super().__getitem__(key)


def toy_dataloader(length: int, num_workers: int = 0):
    return build_dataloader(ToyVideoDataset(length=length), batch_size=4, seed=3, num_workers=num_workers)


def slow_val_dataloader(marker: str, delay_s: float, length: int):
    return build_dataloader(SlowValidationDataset(marker, delay_s, length=length), batch_size=4, seed=3)


def toy_job(job_dir: str) -> JobConfig:
    """The job whose folder is `job_dir`: OUTPUT_ROOT/{project}/{group}/{name} are its last three parts."""
    path = os.path.abspath(job_dir)
    name, group, project = (os.path.basename(p) for p in (path, os.path.dirname(path),
                                                          os.path.dirname(os.path.dirname(path))))
    os.environ["OUTPUT_ROOT"] = os.path.dirname(os.path.dirname(os.path.dirname(path)))
    return JobConfig(project=project, group=group, name=name)


def make_config(options: dict) -> Config:
    """A real Config (the typed sections with their defaults), components as LazyDicts, as a composed run has."""
    length = options.get("dataset_length", 32)
    val_loader = L(toy_dataloader)(length=length) if options.get("val_loader", False) else None
    if "slow_validation_s" in options:
        marker = os.path.join(options["job_dir"], "validation_started")
        val_loader = L(slow_val_dataloader)(marker=marker, delay_s=options["slow_validation_s"], length=length)

    config = Config(
        job=toy_job(options["job_dir"]),
        model=L(ToyDiffusionModel)(nan_after_steps=options.get("nan_after_steps", -1), dim=options.get("dim", 32),
                                   unused_layer=options.get("unused_layer", False),
                                   outside_param=options.get("outside_param", False),
                                   frozen_block0=options.get("frozen_block0", False)),
        ema=L("cosmos_transfer.ema.PowerEMA")(s=0.1) if options.get("ema", True) else None,
        lora=L("cosmos_transfer.lora.LoRA")(rank=options["lora_rank"], alpha=float(options["lora_rank"]),
                                            target_modules=[r"net\.blocks\..*\.mlp\.0"])
        if "lora_rank" in options else None,
        optimizer=L(torch.optim.AdamW)(lr=options.get("lr", 3e-3), weight_decay=0.01, fused=None),
        scheduler=L(schedulers.lambda_linear)(warm_up_steps=[3], f_start=[0.1]),
        dataloader_train=L(toy_dataloader)(length=length, num_workers=options.get("num_workers", 0)),
        dataloader_val=val_loader,
        trainer=TrainerConfig(
            callbacks={"loss_line": L("cosmos_transfer.trainer.callbacks.LossLine")(every=10)},
            max_iter=options["max_iter"],
            logging_iter=1,
            validation_iter=options.get("validation_iter", 0),
            validation_num_batches=options.get("validation_num_batches", 1),
            sample_num_steps=options.get("sample_num_steps", 3),
            grad_accum_iter=options.get("grad_accum_iter", 1),
            clip_grad_norm=1.0,
            lr_multipliers=options.get("lr_multipliers", {}),
            max_nan_steps=options.get("max_nan_steps", 3),
            seed=5,
            progress_bar=False,
            activation_checkpointing=options.get("activation_checkpointing", "none"),
        ),
        checkpoint=CheckpointConfig(
            save_iter=options.get("save_iter", 10),
            keep_last_k=options.get("keep_last_k", 3),
            async_save=options.get("async_save", False),
            load_path=options.get("load_path", ""),
        ),
    )
    return config


def main() -> None:
    options = json.loads(sys.argv[1])
    rank = int(os.environ.get("RANK", "0"))
    if "crash_in_save_at" in options and rank == 1:
        from torch.distributed.checkpoint import FileSystemWriter

        original_write = FileSystemWriter.write_data

        def dying_write(self, plan, planner):
            if f"iter_{options['crash_in_save_at']:09d}" in str(self.path):
                os._exit(17)
            return original_write(self, plan, planner)

        FileSystemWriter.write_data = dying_write
    if "signal_at" in options and rank == 1:
        original_step = trainer_module.Trainer.train_step

        def step_then_signal(self):
            original_step(self)
            if self.iteration == options["signal_at"]:
                os.kill(os.getpid(), signal.SIGTERM)

        trainer_module.Trainer.train_step = step_then_signal
    if "step_sleep_s" in options:
        step = trainer_module.Trainer.train_step

        def slow_step(self):
            step(self)
            time.sleep(options["step_sleep_s"])

        trainer_module.Trainer.train_step = slow_step
    if "hold_at" in options:
        step_before_hold = trainer_module.Trainer.train_step
        release = os.path.join(options["job_dir"], "release")

        def held_step(self):
            step_before_hold(self)
            while self.iteration == options["hold_at"] and not os.path.exists(release):
                time.sleep(0.05)

        trainer_module.Trainer.train_step = held_step
    if "slow_sampling_s" in options:
        generate = ToyDiffusionModel.generate_samples

        def slow_generate(self, batch, **kwargs):
            def slow_call(module, args):
                open(os.path.join(options["job_dir"], "sampling_started"), "w").close()
                time.sleep(options["slow_sampling_s"])

            hook = self.net.register_forward_pre_hook(slow_call)
            try:
                return generate(self, batch, **kwargs)
            finally:
                hook.remove()

        ToyDiffusionModel.generate_samples = slow_generate
    if "slow_publish_s" in options:
        from cosmos_transfer.trainer.checkpoint import Checkpointer

        publish = Checkpointer._finalize

        def slow_publish(self, partial, final):
            if self.rank == 0:
                time.sleep(options["slow_publish_s"])
            publish(self, partial, final)

        Checkpointer._finalize = slow_publish
    if options.get("old_optimizer_groups"):  # the trainer before param groups were split by tensor kind
        build = trainer_module.Trainer._build_optimizer
        trainer_module.Trainer._build_optimizer = lambda self, one_kind_per_group=True: build(self, False)
        rank_state = trainer_module.Trainer._rank_state

        def old_rank_state(self):
            state = rank_state(self)
            del state["optimizer_groups"]
            return state

        trainer_module.Trainer._rank_state = old_rank_state
    trainer_module.train(make_config(options))
    if "slow_publish_s" in options:
        with open(os.path.join(options["job_dir"], f"left_rank{rank}"), "w") as f:
            f.write(repr(time.time()))


def run() -> int:
    """main() behind the scripts' error boundary (cosmos_transfer/cli.py), as scripts/train.py runs the trainer: a
    user error ends as one paragraph and exit status 2."""
    from cosmos_transfer.cli import run_script

    return run_script("train", main)


if __name__ == "__main__":
    sys.exit(run())
