"""The training loop: `train(config)` is what scripts/train.py calls after composing the config.

One iteration, on every rank:

    batch(es) -> model.training_step -> backward (x grad_accum_iter) -> all-reduce the gradients FSDP does not own
    -> gradient norm and clipping -> NaN/Inf guard (all ranks agree) -> optimizer, scheduler and EMA step
    -> metrics.jsonl line -> validation every trainer.validation_iter -> checkpoint every checkpoint.save_iter
    -> preemption check (SIGTERM/SIGUSR1: save and exit 0; also checked inside validation and its sampling)

Rerunning the same command resumes from `<job dir>/checkpoints/latest_checkpoint.txt`; with the same world size on
CPU the losses that follow are bitwise those of an uninterrupted run (model, optimizer, scheduler, EMA, every rank's
RNG states and the data loader's position are restored; loading a batch never touches the global RNG).

What the trainer needs from the model (docs/ARCHITECTURE.md): `training_step(batch) -> (loss, metrics)` on a batch
as the data loader gives it (the model moves it to its device), `trainable_parameters()`, `flops_per_step(batch)`;
for validation samples `generate_samples(...)` and `decode(...)`; transformer blocks in `<network>.blocks` (an
nn.ModuleDict) for FSDP2. The EMA, when configured (`config.ema`, group `ema`: PowerEMA), is built here around the
parallelized model: `instantiate(config.ema, model=model)`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import random
import time
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from cosmos_transfer import lora
from cosmos_transfer.config.errors import ConfigError
from cosmos_transfer.config.lazy import instantiate
from cosmos_transfer.dtypes import torch_dtype
from cosmos_transfer.flops import device_peak_tflops, mfu
from cosmos_transfer.trainer import distributed, frozen_base
from cosmos_transfer.trainer.callbacks import SampleVideos
from cosmos_transfer.trainer.checkpoint import (
    Checkpointer,
    ModelState,
    OptimizerState,
    StatefulAdapter,
    capture_rng_state,
    checkpoint_name,
    load_fingerprinted,
    load_frozen_base,
    load_model_weights,
    restore_rng_state,
)
from cosmos_transfer.trainer.job_lock import hold_job_lock
from cosmos_transfer.trainer.logging import (
    MetricsLogger,
    peak_memory_gb,
    startup_summary,
    validation_line,
)
from cosmos_transfer.trainer.param_groups import lr_param_groups, one_tensor_kind_per_group, scale_group_rates
from cosmos_transfer.trainer.context_parallel import apply_context_parallel, build_context_parallel
from cosmos_transfer.trainer.parallelize import find_networks, parallelize, replicated_trainable_parameters
from cosmos_transfer.trainer.safe_dcp import ResumeError
from cosmos_transfer.trainer.shard_loading import build_on_meta, builds_on_meta, materialize
from cosmos_transfer.trainer.signals import PreemptionHandler, StopRequested, stop_before_each_call

NAN_STOP_FILE = "nan_stop.txt"  # in checkpoints/: left by a NaN stop, read and removed by the next run


class NonFiniteLossError(RuntimeError):
    """Raised after trainer.max_nan_steps consecutive iterations with a NaN/Inf loss or gradient."""


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Run a block without changing python/numpy/torch-CPU global RNG states (data loading, validation)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


class DataStream:
    """Endless batches from a DataLoader, epoch after epoch, without touching the global RNG.

    The DataLoader draws its workers' base seed from the global torch RNG whenever an epoch starts; here that draw
    (and anything a dataset does in the main process) runs inside `preserved_global_rng`, so the training RNG
    sequence does not depend on where epochs or restarts fall. Samples' own randomness comes from the data
    pipeline's (seed, epoch, index).
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.epoch = 0
        self._iterator: Iterator | None = None

    def next(self) -> Any:
        with preserved_global_rng():
            for attempt in range(2):
                if self._iterator is None:
                    self._iterator = iter(self.loader)
                try:
                    return next(self._iterator)
                except StopIteration:
                    self._iterator = None
                    self.epoch += 1
                    sampler = getattr(self.loader, "sampler", None)
                    if not hasattr(self.loader, "state_dict") and hasattr(sampler, "set_epoch"):
                        sampler.set_epoch(self.epoch)  # a plain DataLoader over e.g. DistributedSampler
        raise RuntimeError(f"the training data loader yields no batches ({type(self.loader).__name__})")

    def state_dict(self) -> dict[str, Any]:
        if hasattr(self.loader, "state_dict"):
            return {"loader": self.loader.state_dict(), "epoch": self.epoch}
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any], same_world_size: bool) -> str | None:
        """Restore the position; returns a warning when it can only be restored approximately."""
        self.epoch = int(state.get("epoch", 0))
        self._iterator = None
        if "loader" not in state or not hasattr(self.loader, "load_state_dict"):
            return None
        if same_world_size:
            self.loader.load_state_dict(state["loader"])
            return None
        epoch = int(state["loader"].get("epoch", 0))
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)
        return f"world size changed: the data loader restarts epoch {epoch} from its beginning"


def clip_gradients(parameters: list[nn.Parameter], max_norm: float, device: torch.device) -> torch.Tensor:
    """Global L2 norm of the gradients (FSDP-sharded and replicated alike); scales them to `max_norm` if above.

    max_norm <= 0 only measures. Sharded gradients contribute their local shard and are summed over ranks;
    replicated ones (already averaged) count once.
    """
    sharded_sq = torch.zeros((), dtype=torch.float32, device=device)
    replicated_sq = torch.zeros((), dtype=torch.float32, device=device)
    grads = []
    for p in parameters:
        if p.grad is None:
            continue
        if isinstance(p.grad, DTensor):
            local = p.grad.to_local()
            # Summing over all ranks counts a shard once per replica (HSDP): divide that back out.
            mesh, placements = p.grad.device_mesh, p.grad.placements
            replicas = math.prod(mesh.size(i) for i, placement in enumerate(placements) if placement.is_replicate())
            sharded_sq += local.detach().float().pow(2).sum() / replicas
        else:
            local = p.grad
            replicated_sq += local.detach().float().pow(2).sum()
        grads.append(local)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(sharded_sq)
    total = (sharded_sq + replicated_sq).sqrt()
    if max_norm > 0:
        scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(scale.to(g.dtype))
    return total


class Trainer:
    """Builds everything from a composed config and runs the loop; see the module docstring."""

    def __init__(self, config: Any, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()
        trainer_cfg, ckpt_cfg = config.trainer, config.checkpoint
        # Context parallelism (trainer/context_parallel.py): the ranks of a CP group share each sample, so the data
        # and the noise follow the data-parallel rank.
        self.cp = build_context_parallel(int(trainer_cfg.context_parallel_size), device,
                                         int(trainer_cfg.fsdp_shard_size))
        self.dp_rank, self.dp_size = (self.cp.dp_rank, self.cp.dp_size) if self.cp else (self.rank, self.world_size)
        for name, group in (("model", "model"), ("optimizer", "optimizer"), ("dataloader_train", "data_train")):
            if getattr(config, name, None) is None:
                raise ConfigError(f"config.{name} is not set: choose a `{group}` option (or an experiment that "
                                  "sets it)")
        self.max_iter = int(trainer_cfg.max_iter)
        self.grad_accum_iter = int(trainer_cfg.grad_accum_iter)
        self.clip_grad_norm = float(trainer_cfg.clip_grad_norm)
        self.max_nan_steps = int(trainer_cfg.max_nan_steps)
        self.validation_iter = int(trainer_cfg.validation_iter)
        self.logging_iter = int(trainer_cfg.logging_iter)
        self.seed = int(trainer_cfg.seed)
        self.save_iter = int(ckpt_cfg.save_iter)
        self.job_dir = str(config.job.path)
        if self.rank == 0:  # one run per job folder, taken before anything is written into it (job_lock.py)
            hold_job_lock(self.job_dir)
        if self.grad_accum_iter < 1:
            raise ValueError(f"trainer.grad_accum_iter must be >= 1, got {self.grad_accum_iter}")

        # Same seed on every rank while building: FSDP2 keeps each rank's slice of identical initial weights.
        self._seed_everything(self.seed)
        self.model = self._build_model()
        # Different streams per rank from here on (noise, sigma, dropout), reproducible per rank.
        self._seed_everything(self.seed + 1_000_003 * (self.dp_rank + 1))

        self.params = [p for p in self._trainable_parameters()]
        self.replicated_params = [p for p in replicated_trainable_parameters(self.model) if p.requires_grad]
        self.multipliers = self._multipliers_in_use()
        self.optimizer = self._build_optimizer()
        self.optimizer_groups = "one_tensor_kind"  # or "mixed" for a job saved before (_match_optimizer_groups)
        self.scheduler = instantiate(config.scheduler, optimizer=self.optimizer) if config.scheduler else None
        # The EMA follows the sharded parameters, so it is built after parallelize (first update copies the weights).
        self.ema = instantiate(config.ema, model=self.model) if config.ema else None
        self.data = DataStream(instantiate(config.dataloader_train, **self._data_ranks()))
        val_config = getattr(config, "dataloader_val", None)
        self.val_loader = instantiate(val_config, **self._data_ranks()) if val_config else None
        # Each validation reads the same first batches: remember where the validation loader starts.
        self.val_loader_start = self.val_loader.state_dict() if hasattr(self.val_loader, "state_dict") else None
        self.fixed_batch: dict[str, Any] | None = None  # without a validation loader: the first training batch

        self.callbacks = [instantiate(c) for c in dict(trainer_cfg.callbacks).values() if c]
        if trainer_cfg.validation_samples:  # sample videos at each validation (a callback on the validation hook)
            self.callbacks.append(SampleVideos(trainer_cfg.sample_num_steps, trainer_cfg.sample_guidance))
        self.checkpointer = Checkpointer(
            os.path.join(self.job_dir, "checkpoints"),
            keep_last_k=int(ckpt_cfg.keep_last_k),
            async_save=bool(ckpt_cfg.async_save),
            say=self._print,
        )
        self.iteration = 0
        self.skipped_steps = 0
        self.skipped_samples = 0
        self.nan_streak = 0
        self.save_deferred = False  # a save that fell inside a run of non-finite steps waits for a finite one
        self.resumed_from: str | None = None
        self.frozen_base: frozen_base.FrozenBase | None = None  # what lean checkpoints reference instead of saving
        self._flops_unavailable = False
        self._load_initial_state()
        self.peak_tflops = device_peak_tflops(device, trainer_cfg.peak_tflops)
        self.logger = MetricsLogger(
            self.job_dir,
            enabled=self.rank == 0,
            start_iteration=self.iteration,
            max_iteration=self.max_iter,
            tensorboard=bool(trainer_cfg.tensorboard),
            wandb_project=trainer_cfg.wandb_project,
            wandb_name=getattr(config.job, "name", None),
            progress_bar=bool(trainer_cfg.progress_bar),
            dashboard_every=self.logging_iter,
        )

    # -- building -----------------------------------------------------------------------------------------------------
    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _data_ranks(self) -> dict[str, int]:
        """Under context parallelism a CP group reads one data stream: the loaders get the data-parallel rank."""
        return {"rank": self.dp_rank, "world_size": self.dp_size} if self.cp is not None else {}

    def _build_model(self) -> nn.Module:
        trainer_cfg = self.config.trainer
        model = self._instantiate_model()
        # LoRA adapters (config.lora, cosmos_transfer/lora.py) go in before sharding, from the same seed on all ranks.
        self.lora = instantiate(self.config.lora) if self.config.lora else None
        self.frozen_by_lora: set[str] = set()  # parameters LoRA froze that would train without it (model names)
        if self.lora is not None:
            trained = {name for name, p in model.named_parameters() if p.requires_grad}
            self._print(self.lora.apply(model))
            self.frozen_by_lora = {name for name, p in model.named_parameters()
                                   if not p.requires_grad and lora.base_name(name) in trained}
        if not self.built_on_meta:
            model.to(self.device)
        cuda = self.device.type == "cuda"
        if self.cp is not None:  # before sharding: FSDP2's hooks go outside the token split
            apply_context_parallel(model, self.cp)
        parallelize(
            model,
            device=self.device,
            activation_checkpointing=trainer_cfg.activation_checkpointing,
            compile_blocks=bool(trainer_cfg.compile),
            param_dtype=torch_dtype(trainer_cfg.param_dtype or ("bfloat16" if cuda else "float32")),  # None: by device
            reduce_dtype=torch_dtype(trainer_cfg.reduce_dtype or "float32"),
            shard_size=int(trainer_cfg.fsdp_shard_size),
            mesh=self.cp.fsdp_mesh() if self.cp is not None else None,
        )
        if self.built_on_meta:  # each rank allocates and initializes its own shards only
            materialize(model, self.device, self.seed)
        return model

    def _instantiate_model(self) -> nn.Module:
        """The model, on the meta device when checkpoint.load_path provides its weights (trainer/shard_loading.py:
        no rank ever holds the whole model; each reads its rows of the file), else built eagerly as it always was
        (a fresh random initialization, bitwise the same for a seed)."""
        self.built_on_meta = builds_on_meta(self.config)
        return build_on_meta(self.config.model) if self.built_on_meta else instantiate(self.config.model)

    def _trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.model.trainable_parameters())
        if not params:
            raise ValueError(f"{type(self.model).__name__}.trainable_parameters() returned no parameters")
        if any(not p.requires_grad for p in params):
            raise ValueError("trainable_parameters() returned a frozen parameter (requires_grad=False)")
        return params

    def _multipliers_in_use(self) -> dict[str, float] | None:
        """trainer.lr_multipliers less the patterns that name only layers LoRA froze (with a line): an experiment's
        multipliers for layers it trains in full (the demo's AdaLN modulation) mean nothing when LoRA adapts them
        instead, and would otherwise stop `lora=control` on it as matching no trainable parameter. A pattern that
        matches no parameter LoRA froze stays an error (param_groups.py)."""
        multipliers = self._lr_multipliers()
        trainable = [name for name, p in self.model.named_parameters() if p.requires_grad]
        unused = [pattern for pattern in multipliers if not any(fnmatch.fnmatchcase(n, pattern) for n in trainable)]
        dropped = [pattern for pattern in unused
                   if any(fnmatch.fnmatchcase(n, pattern) for n in self.frozen_by_lora)]
        if dropped:
            self._print(f"trainer.lr_multipliers {dropped} name only layers LoRA freezes: not used in this run "
                        "(set trainer.lr_multipliers={} to say so in the config)")
        return {k: v for k, v in multipliers.items() if k not in dropped} or None

    def _build_optimizer(self, one_kind_per_group: bool = True) -> torch.optim.Optimizer:
        groups = lr_param_groups(self.model, self.params, self.multipliers)
        kwargs: dict[str, Any] = {"params": one_tensor_kind_per_group(groups) if one_kind_per_group else groups}
        # An option with `fused: null` (configs/optimizer.py) runs fused: one kernel for all of a group's parameters
        # (on CPU too: 12% of the CPU demo's step time went to the per-tensor loop, BENCHMARKS.md).
        optimizer_config = self.config.optimizer
        if "fused" in optimizer_config and optimizer_config.get("fused") is None:
            kwargs["fused"] = True
        if not one_kind_per_group and "fused" in optimizer_config:  # mixed groups: per tensor, as they were written
            kwargs.update(fused=False, foreach=False)
        optimizer = instantiate(self.config.optimizer, **kwargs)
        scale_group_rates(optimizer)
        return optimizer

    def _app_state(self) -> dict[str, Any]:
        leave_out = self.frozen_base.keys if self.frozen_base is not None else ()  # lean checkpoints: frozen_base.py
        state: dict[str, Any] = {"model": ModelState(self.model, leave_out),
                                 "optimizer": OptimizerState(self.model, self.optimizer)}
        if self.ema is not None:
            state["ema"] = StatefulAdapter(self.ema)
        return state

    def _rank_state(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "skipped_steps": self.skipped_steps,
            "skipped_samples": self.skipped_samples,
            "nan_streak": self.nan_streak,
            "rng": capture_rng_state(),
            "data": self.data.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "lr_multipliers": self._lr_multipliers(),
            "optimizer_lr": self._configured_lr(),
            "lora": self.lora.settings() if self.lora is not None else None,  # what export needs to merge adapters
            "optimizer_groups": self.optimizer_groups,  # absent: from before the split (_match_optimizer_groups)
            "context_parallel_size": self.cp.size if self.cp is not None else 1,  # _check_context_parallel
        }

    def _lr_multipliers(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in dict(self.config.trainer.lr_multipliers or {}).items()}

    def _configured_lr(self) -> float | None:
        """optimizer.lr as configured (the optimizer's LazyDict); None when not set."""
        value = self.config.optimizer.get("lr")
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):  # not a plain number (left to the optimizer to complain about)
            return None

    def _check_learning_rate(self, checkpoint: str) -> None:
        """Resuming restores the optimizer's and the scheduler's saved rates: a changed optimizer.lr would be
        ignored while config.yaml shows it, so it is refused (docs/TRAINING.md)."""
        saved, current = self.checkpointer.saved_trainer_state(checkpoint).get("optimizer_lr"), self._configured_lr()
        if saved is not None and current is not None and float(saved) != current:
            raise ResumeError(
                f"optimizer.lr is {current:g}, but {checkpoint} was saved with {float(saved):g}: resuming restores the "
                "saved optimizer and learning-rate schedule, so the new value would be ignored. Set optimizer.lr back "
                f"to {float(saved):g} to resume this job; to train on from these weights at another rate, start a new "
                f"job (another job.name) with checkpoint.load_path={checkpoint}"
            )

    def _check_context_parallel(self, checkpoint: str) -> None:
        """Another trainer.context_parallel_size regroups the ranks: the data positions and noise streams the
        checkpoint saved per data-parallel rank would go to ranks of other groups (context_parallel.py)."""
        saved = self.checkpointer.saved_trainer_state(checkpoint).get("context_parallel_size")
        current = self.cp.size if self.cp is not None else 1
        if saved is not None and int(saved) != current:
            raise ResumeError(
                f"trainer.context_parallel_size is {current}, but {checkpoint} was saved with {int(saved)}: the ranks "
                "would form other groups, and the data positions and noise streams saved per data-parallel rank "
                f"would not be theirs. Set it back to {int(saved)} to resume this job; to go on from these weights "
                "with another size, start a new job (another job.name) with checkpoint.load_path set to a file "
                "exported by scripts/export_checkpoint.py")

    def _check_optimizer_groups(self, checkpoint: str) -> None:
        """The optimizer's parameter groups come from trainer.lr_multipliers: a checkpoint saved with other
        multipliers has other groups, and its optimizer state cannot be loaded into these."""
        saved = self.checkpointer.saved_trainer_state(checkpoint).get("lr_multipliers")
        if saved is not None and list(saved.items()) != list(self._lr_multipliers().items()):  # order: first match wins
            raise ResumeError(
                f"trainer.lr_multipliers is {self._lr_multipliers()}, but {checkpoint} was saved with {saved}: the "
                "optimizer's parameter groups would not match. Set it back to resume this job; to continue from "
                "these weights with other multipliers, start a new job (another job.name) with "
                "checkpoint.load_path set to a file exported by scripts/export_checkpoint.py"
            )

    def _check_lora(self, checkpoint: str) -> None:
        """The adapters' rank is their tensors' shape: a checkpoint saved with another lora.rank (or with LoRA on or
        off) cannot be loaded into this run's layers."""
        saved = self.checkpointer.saved_trainer_state(checkpoint).get("lora")
        current = self.lora.settings() if self.lora is not None else None
        if (saved or {}).get("rank") == (current or {}).get("rank"):
            return  # the same rank (targets that differ show as other tensors: check_resumable)
        holds = f"was saved with LoRA rank {saved.get('rank')}" if saved else "was saved without LoRA"
        asks = f"lora.rank is {current['rank']}" if current else "this run has none (no `lora` config)"
        raise ResumeError(
            f"{asks}, but {checkpoint} {holds}: its adapters (or their absence) are part of the weights it holds. Set "
            "the lora settings back to resume this job; to train on from these weights with other adapters, start a "
            "new job (another job.name) with checkpoint.load_path set to a file exported by "
            "scripts/export_checkpoint.py (--lora merged)")

    def _check_model_matches(self, checkpoint: str) -> None:
        """The checkpoint's tensors against this run's model and EMA (another size, hint key, experiment, ...)."""
        base = frozen_base.read(checkpoint)  # a lean checkpoint lacks its frozen base on purpose
        states = {"model": ModelState(self.model, base.keys if base is not None else ())}
        if self.ema is not None:
            states["ema"] = StatefulAdapter(self.ema)
        self.checkpointer.check_resumable(checkpoint, states)

    def _match_optimizer_groups(self, checkpoint: str) -> None:
        """A checkpoint saved before the parameter groups were split by tensor kind (param_groups.py) holds fewer
        groups when a plain parameter (the logvar head) shared one with FSDP2's DTensors; such runs stepped per
        tensor (fused kernels refuse the mix). Rebuild the optimizer that way, so that the job resumes exactly."""
        if self.checkpointer.saved_trainer_state(checkpoint).get("optimizer_groups") == "one_tensor_kind":
            return
        unsplit = self._build_optimizer(one_kind_per_group=False)
        if len(unsplit.param_groups) == len(self.optimizer.param_groups):
            return
        self.optimizer, self.optimizer_groups = unsplit, "mixed"
        self.scheduler = instantiate(self.config.scheduler, optimizer=self.optimizer) if self.config.scheduler else None
        self._print(f"{checkpoint} was saved with the optimizer's older parameter groups (a plain parameter beside "
                    "sharded ones): this job continues with them and per-tensor AdamW, as it was trained")

    def _load_initial_state(self) -> None:
        """Resume from the job's latest checkpoint, or else initialize the weights from checkpoint.load_path."""
        ckpt_cfg = self.config.checkpoint
        latest = self.checkpointer.resume_point()
        if latest is None:
            self._report_nan_stop(None)
            load_path = ckpt_cfg.load_path
            if load_path:
                options = dict(strict=bool(ckpt_cfg.strict_load),
                               allowed_missing_keys=list(ckpt_cfg.allowed_missing_keys or []),
                               use_ema=bool(ckpt_cfg.load_ema),
                               report=self._print)  # says which layout the file has (checkpoints/transfer1.py)
                # A model with frozen weights may reference them in lean checkpoints: fingerprint the bytes as read.
                saved = set(self.model.state_dict(keep_vars=True))  # (a frozen tokenizer is never saved)
                if any(not p.requires_grad for name, p in self.model.named_parameters() if name in saved):
                    keys, read_as = load_fingerprinted(self.model, load_path, **options)
                else:
                    keys, read_as = load_model_weights(self.model, load_path, **options), None
                self._print(f"initialized {len(keys)} weights from {load_path}")
                if read_as is not None:
                    self._reference_frozen_base(load_path, keys, read_as)
                    self._register_frozen_base()
            return
        # What the checkpoint holds against what the config asks, each a ResumeError saying how to proceed.
        self._check_lora(latest)
        self._check_model_matches(latest)
        self._check_optimizer_groups(latest)
        self._match_optimizer_groups(latest)
        self._check_learning_rate(latest)
        self._check_context_parallel(latest)
        self._report_nan_stop(latest)
        self._reload_frozen_base(latest)
        state = self.checkpointer.load(latest, self._app_state())
        self.iteration = int(state["iteration"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.skipped_samples = int(state.get("skipped_samples", 0))
        self.nan_streak = int(state.get("nan_streak", 0))
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        warning = self.data.load_state_dict(state.get("data", {}), same_world_size=not state["resharded"])
        if state["resharded"]:
            # A different world size: weights and optimizer reshard exactly; per-rank RNG streams cannot carry over.
            self._seed_everything(self.seed + 1_000_003 * (self.dp_rank + 1) + self.iteration)
            self._print(f"resumed {latest} saved by {state['world_size']} ranks on {self.world_size}; {warning or ''}")
        else:
            restore_rng_state(state["rng"])
            self._print(f"resumed from {latest} at iteration {self.iteration}")
        self.resumed_from = latest

    # -- lean checkpoints (trainer/frozen_base.py) ----------------------------------------------------------------
    def _reference_frozen_base(self, load_path: str, loaded_keys: list[str], read_as: tuple[int, str]) -> None:
        """Checkpoints leave out the frozen parameters that `load_path` provided and reference the file instead;
        `read_as` is its (bytes, CRC-32) when it was read (checkpoint.load_fingerprinted). `loaded_keys` are the
        model's own names already (load_model_weights: a LoRA layer's `.base_layer.` included)."""
        frozen = {name for name, p in self.model.named_parameters() if not p.requires_grad}
        keys = sorted(k for k in loaded_keys if k in frozen)
        if keys:
            ckpt_cfg = self.config.checkpoint
            self.frozen_base = frozen_base.FrozenBase(
                os.path.abspath(load_path), *read_as, keys, bool(ckpt_cfg.strict_load),
                list(ckpt_cfg.allowed_missing_keys or []), bool(ckpt_cfg.load_ema))

    def _reload_frozen_base(self, checkpoint: str) -> None:
        """A lean checkpoint's frozen base, read again from the source it names (checked first), as it was read."""
        base = frozen_base.read(checkpoint)
        if base is None:
            return
        configured = self.config.checkpoint.load_path
        if configured and os.path.abspath(configured) != base.path:
            raise frozen_base.FrozenBaseError(
                f"checkpoint.load_path is {configured}, but {checkpoint} was trained on the frozen base {base.path} "
                "(it holds no copy of it): resume with that load_path, or start a new job to use another base")
        load_frozen_base(self.model, base, checkpoint, group=self.checkpointer.group)
        self.frozen_base = base
        self._print(f"read the frozen base ({len(base.keys)} tensors) again from {base.path}")
        self._register_frozen_base(resumed=True)

    def _register_frozen_base(self, resumed: bool = False) -> None:
        """A frozen base that is another job's checkpoint is noted there, so that its retention keeps it
        (Checkpointer.register_reference). If it cannot be, a new job saves full checkpoints instead."""
        if self.frozen_base is None:
            return
        problem = self.checkpointer.register_reference(self.frozen_base.path)
        if problem is None:
            return
        if resumed:  # its checkpoints already reference the base: say what may happen to it
            self._print(f"WARNING: {problem}: the retention of the job holding {self.frozen_base.path} may delete "
                        "it, and with it what this job's checkpoints need; export a checkpoint to keep its weights")
            return
        self._print(f"{problem}: checkpoints hold the whole model instead of referencing {self.frozen_base.path} "
                    "(which another job's retention could delete)")
        self.frozen_base = None

    def _nan_stop_file(self) -> str:
        return os.path.join(self.checkpointer.directory, NAN_STOP_FILE)

    def _report_nan_stop(self, resuming: str | None) -> None:
        """After a NaN stop, say that this run starts from the last good checkpoint (the stop left a note)."""
        path = self._nan_stop_file()
        if not os.path.isfile(path):
            return
        with open(path, encoding="utf-8") as f:
            note = f.read().strip()
        self._print(f"the previous run {note}; " + (f"resuming from the last good checkpoint {resuming}" if resuming
                                                    else "it left no good checkpoint: starting from the beginning"))
        distributed.barrier()
        if self.rank == 0:
            os.remove(path)

    def _print(self, message: str) -> None:
        if self.rank == 0:
            logger = getattr(self, "logger", None)
            if logger is not None:
                logger.write(message)
            else:
                print(f"[cosmos_transfer] {message}", flush=True)

    # -- the loop -----------------------------------------------------------------------------------------------------
    def stop_requested(self) -> bool:
        """True on every rank once any rank got SIGTERM/SIGUSR1 (a tiny all-reduce: call it on all ranks together)."""
        preemption = getattr(self, "preemption", None)  # installed by run()
        return distributed.all_reduce_max_flag(preemption is not None and preemption.requested, self.device)

    def run(self) -> None:
        self.preemption = preemption = PreemptionHandler().install()
        try:
            if self.iteration >= self.max_iter:
                self._print(f"nothing to do: iteration {self.iteration} >= trainer.max_iter {self.max_iter}")
                return
            self._print(startup_summary(self))
            started, first_iteration = time.perf_counter(), self.iteration
            self.model.train()
            for callback in self.callbacks:
                callback.on_train_start(self)
            while self.iteration < self.max_iter:
                self.checkpointer.poll()
                self.train_step()
                if self.validation_iter > 0 and self.iteration % self.validation_iter == 0:
                    self.validate()
                last = self.iteration == self.max_iter
                saved = last or (self.save_iter > 0 and self.iteration % self.save_iter == 0)
                saved = saved or (self.save_deferred and self.nan_streak == 0)
                if saved:
                    self.save()
                if not last and self.stop_requested():
                    self._print(f"preempted: saving at iteration {self.iteration} and exiting")
                    if not saved:
                        self.save()
                    break
            self.checkpointer.wait()
            # All ranks leave together, once rank 0 has published the last checkpoint: launchers end the whole job
            # when the first process exits (srun --kill-on-bad-exit, torchrun's status 1 after a signal).
            distributed.barrier()
            for callback in self.callbacks:
                callback.on_train_end(self)
            self.logger.close_progress()
            self._print(f"{'stopped' if self.iteration < self.max_iter else 'finished'} at iteration "
                        f"{self.iteration} of {self.max_iter}: {self.iteration - first_iteration} iteration(s) in "
                        f"{time.perf_counter() - started:.1f} s; latest checkpoint {self.checkpointer.latest()}; "
                        f"metrics in {os.path.join(self.job_dir, 'metrics.jsonl')}")
        finally:
            preemption.restore()
            self.logger.close()

    def save(self) -> None:
        """Checkpoint the current state, unless the last steps were non-finite: such a state never becomes the
        latest checkpoint (the save waits for the next finite step; a stop keeps the last good checkpoint)."""
        if self.nan_streak > 0:
            self.save_deferred = True
            self._print(f"not saving at iteration {self.iteration}: its last {self.nan_streak} step(s) were "
                        f"non-finite; the latest checkpoint stays {self.checkpointer.latest() or '(none yet)'}")
            return
        self.save_deferred = False
        save_start = time.perf_counter()
        self.checkpointer.save(self.iteration, self._app_state(), self._rank_state(), frozen=self.frozen_base)
        self._print(f"checkpoint at iteration {self.iteration} "
                    f"{'being written to' if self.checkpointer.async_save else 'saved to'} "
                    f"{os.path.join(self.checkpointer.directory, checkpoint_name(self.iteration))} "
                    f"at {time.strftime('%H:%M:%S')} ({time.perf_counter() - save_start:.1f} s)")
        for callback in self.callbacks:
            callback.on_save(self, self.iteration)

    def _networks_sync_gradients(self, sync: bool) -> None:
        for _, net in find_networks(self.model):
            if hasattr(net, "set_requires_gradient_sync"):
                net.set_requires_gradient_sync(sync)

    def train_step(self) -> None:
        start = time.perf_counter()
        data_wait = 0.0
        flops = 0.0
        tokens = 0
        losses, step_metrics = [], []
        skipped_samples = 0
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(self.grad_accum_iter):
            wait_start = time.perf_counter()
            batch = self.data.next()
            if self.fixed_batch is None and self.val_loader is None:
                self.fixed_batch = batch
            if isinstance(batch, dict) and "num_skipped" in batch:  # bad clips the dataset replaced
                skipped_samples += int(batch["num_skipped"].sum())
            data_wait += time.perf_counter() - wait_start
            # Gradients are reduced across ranks only on the last micro-batch; earlier ones accumulate locally.
            self._networks_sync_gradients(micro == self.grad_accum_iter - 1)
            loss, metrics = self.model.training_step(batch)
            (loss / self.grad_accum_iter).backward()
            losses.append(loss.detach())
            step_metrics.append(metrics)
            flops += self._flops(batch)
            tokens += self._tokens(batch)
        for p in self.replicated_params:
            if p.grad is not None and self.world_size > 1:
                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        grad_norm = clip_gradients(self.params, self.clip_grad_norm, self.device)
        loss = torch.stack(losses).mean()
        finite = bool(torch.isfinite(loss).item()) and bool(torch.isfinite(grad_norm).item())
        bad = distributed.all_reduce_max_flag(not finite, self.device)
        self.iteration += 1
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
        if bad:
            self.optimizer.zero_grad(set_to_none=True)  # nothing of this step reaches the weights
            self.skipped_steps += 1
            self.nan_streak += 1
        else:
            self.nan_streak = 0
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        step_time = time.perf_counter() - start
        self._log_step(loss, step_metrics, grad_norm, step_time, data_wait, flops, tokens, lr, bad, skipped_samples)
        if bad:
            self._print(f"iteration {self.iteration}: non-finite loss or gradient on some rank, step skipped "
                        f"({self.nan_streak} in a row)")
            if self.nan_streak >= self.max_nan_steps:
                self.checkpointer.wait()  # an earlier (good) asynchronous save is published; this state is not saved
                good = self.checkpointer.latest()
                note = (f"stopped at iteration {self.iteration} after {self.nan_streak} consecutive non-finite steps "
                        f"(trainer.max_nan_steps={self.max_nan_steps})")
                if self.rank == 0:
                    with open(self._nan_stop_file(), "w", encoding="utf-8") as f:
                        f.write(note + "\n")
                raise NonFiniteLossError(
                    f"{self.nan_streak} consecutive iterations had a NaN/Inf loss or gradient (trainer.max_nan_steps="
                    f"{self.max_nan_steps}); stopped at iteration {self.iteration} without saving this state. "
                    + (f"Rerunning resumes from the last good checkpoint {good}. " if good else
                       "No checkpoint was saved before: rerunning starts from the beginning. ")
                    + "Lower the learning rate, check the data, or resume from an earlier checkpoint."
                )

    def _flops(self, batch: Any) -> float:
        """The model's FLOP count of a training step on `batch` (0 when it cannot count: MFU is then not reported)."""
        count = getattr(self.model, "flops_per_step", None)
        if count is None or self._flops_unavailable:
            return 0.0
        try:  # per device: a context-parallel rank computes 1/N of its sample's tokens
            return float(count(batch)) / (self.cp.size if self.cp is not None else 1)
        except (ImportError, NotImplementedError) as error:
            self._flops_unavailable = True
            self._print(f"FLOP counter unavailable ({error}); TFLOP/s and MFU are not reported")
            return 0.0

    def _tokens(self, batch: Any) -> int:
        """Transformer tokens of `batch`, as the model counts them (`tokens_per_step`; 0, not reported, without)."""
        count = getattr(self.model, "tokens_per_step", None)
        return int(count(batch)) if count is not None else 0

    def _log_step(
        self, loss, step_metrics, grad_norm, step_time, data_wait, flops, tokens, lr: float, skipped: bool, skipped_samples: int
    ) -> None:
        local = {"loss": float(loss), "_skipped_samples": float(skipped_samples)}
        for key in step_metrics[0]:
            if key != "loss":
                local[key] = float(sum(float(m[key]) for m in step_metrics) / len(step_metrics))
        mean = distributed.all_reduce_mean(local, self.device)
        self.skipped_samples += round(mean.pop("_skipped_samples") * self.dp_size)
        tflops = flops / step_time / 1e12 if flops else None
        record = {
            **mean,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "step_time_s": step_time,
            "data_wait_s": data_wait,
            "skipped_step": skipped,
            "skipped_steps": self.skipped_steps,
            "skipped_samples": self.skipped_samples,  # bad clips replaced by the dataset, all ranks, whole run
            "tokens_per_s": tokens * self.dp_size / step_time if tokens else None,
            "tflops_per_s": tflops,  # per device
            "mfu": mfu(flops, step_time, self.peak_tflops * 1e12) if (flops and self.peak_tflops) else None,
            "peak_memory_gb": peak_memory_gb(self.device),
        }
        self.logger.log(self.iteration, record)
        self.logger.update_progress(self.iteration, mean["loss"])
        for callback in self.callbacks:
            callback.on_step_end(self, self.iteration, record)

    # -- validation ---------------------------------------------------------------------------------------------------
    def _ema_weights(self):
        if self.ema is None:
            return contextlib.nullcontext()
        return self.ema.swapped_in()

    def validate(self) -> None:
        """Validation loss and a generated sample, on every rank (each its own batch: no rank waits alone).

        A stop request (SIGTERM/SIGUSR1) abandons the pass between batches or sampler steps, so the save starts soon.
        """
        try:
            self._validation_pass()
        except StopRequested as stop:
            self._print(f"stop requested: {stop} abandoned at iteration {self.iteration}, to save sooner")
        finally:
            self.model.train()

    def _validation_pass(self) -> None:
        trainer_cfg = self.config.trainer
        num_batches = int(trainer_cfg.validation_num_batches)
        self.model.eval()
        with preserved_global_rng(), torch.no_grad(), self._ema_weights():
            self._seed_everything(self.seed + 7919 * (self.dp_rank + 1))  # the same validation noise every time
            if self.val_loader is None:
                batches = [self.fixed_batch] if self.fixed_batch is not None else []
            else:
                if self.val_loader_start is not None:
                    self.val_loader.load_state_dict(self.val_loader_start)
                batches = self.val_loader
            losses, first_batch, val_metrics, samples = [], None, None, None
            for index, batch in enumerate(batches):
                if index >= num_batches:
                    break
                if self.stop_requested():
                    raise StopRequested("validation")
                first_batch = first_batch if first_batch is not None else batch
                loss, metrics = self.model.training_step(batch)
                losses.append({"loss": float(loss), "mse": float(metrics.get("mse", loss))})
            if losses:
                local = {k: sum(m[k] for m in losses) / len(losses) for k in losses[0]}
                val_metrics = distributed.all_reduce_mean(local, self.device)
                self.logger.log(self.iteration, val_metrics, prefix="val")
                for callback in self.callbacks:
                    callback.on_validation_end(self, self.iteration, val_metrics)
            if first_batch is not None:
                networks = [net for _, net in find_networks(self.model)]
                with stop_before_each_call(networks, self.stop_requested):  # the model's sampler loop
                    written = [c.on_validation_samples(self, self.iteration, first_batch) for c in self.callbacks]
                samples = next((path for path in written if path), None)
        self._print(validation_line(self.iteration, val_metrics, samples))


def train(config: Any) -> None:
    """Train as `config` says, under torchrun (any number of ranks) or plain python (one rank)."""
    timeout = float(config.trainer.timeout_s)
    device = distributed.init_distributed(timeout_s=timeout)
    try:
        Trainer(config, device).run()
    finally:
        distributed.destroy_distributed()
