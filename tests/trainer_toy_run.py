"""Runs the trainer on the toy model (tests/trainer_toy.py); launched by the trainer tests under torchrun or python.

    torchrun --nproc_per_node=2 tests/trainer_toy_run.py '{"job_dir": "...", "max_iter": 30, ...}'

Fault injection for the tests (test-only, patched in here, never in the library):
  "crash_in_save_at": N    rank 1 dies (os._exit) while DCP writes the checkpoint of iteration N
  "signal_at": N           rank 1 sends itself SIGTERM during iteration N (as a scheduler would)
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from cosmos_transfer.data.sampler import build_dataloader  # noqa: E402
from cosmos_transfer.lazy_config import LazyCall as L  # noqa: E402
from cosmos_transfer.trainer import schedulers  # noqa: E402
from cosmos_transfer.trainer import trainer as trainer_module  # noqa: E402
from trainer_toy import ToyDiffusionModel, ToyVideoDataset  # noqa: E402


def make_config(options: dict) -> types.SimpleNamespace:
    def dataloader():
        return build_dataloader(ToyVideoDataset(length=options.get("dataset_length", 32)), batch_size=4, seed=3)

    return types.SimpleNamespace(
        job=types.SimpleNamespace(path=options["job_dir"], name="toy"),
        # A LazyDict with the EMA at model.ema, as the config groups compose it (the trainer splits it off).
        model=L(ToyDiffusionModel)(
            nan_after_steps=options.get("nan_after_steps", -1),
            dim=options.get("dim", 32),
            ema=L("cosmos_transfer.ema.PowerEMA")(s=0.1) if options.get("ema", True) else None,
        ),
        optimizer=functools.partial(torch.optim.AdamW, lr=options.get("lr", 3e-3), weight_decay=0.01),
        scheduler=functools.partial(schedulers.lambda_linear, warm_up_steps=[3], f_start=[0.1]),
        dataloader_train=dataloader,
        dataloader_val=dataloader if options.get("val_loader", False) else None,
        trainer=types.SimpleNamespace(
            callbacks={"loss_line": L("cosmos_transfer.trainer.callbacks.LossLine")(every=10)},
            max_iter=options["max_iter"],
            validation_iter=options.get("validation_iter", 0),
            sample_num_steps=3,
            grad_accum_iter=options.get("grad_accum_iter", 1),
            clip_grad_norm=1.0,
            lr_multipliers=options.get("lr_multipliers", {}),
            max_nan_steps=options.get("max_nan_steps", 3),
            seed=5,
            progress_bar=False,
            activation_checkpointing=options.get("activation_checkpointing", "none"),
        ),
        checkpoint=types.SimpleNamespace(
            save_iter=options.get("save_iter", 10),
            keep_last_k=options.get("keep_last_k", 3),
            async_save=options.get("async_save", False),
            load_path=options.get("load_path", ""),
        ),
    )


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
    trainer_module.train(make_config(options))


if __name__ == "__main__":
    main()
