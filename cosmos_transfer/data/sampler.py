"""Sharded, shuffled sampling with exact resume.

Each epoch the whole dataset is shuffled by (seed, epoch) with the same permutation on every rank, and rank r takes
every world_size-th entry starting at r, cut to the same length on every rank: ranks never share a sample within an
epoch. The sampler yields (epoch, index) pairs, so that the dataset can derive each sample's randomness from
(seed, epoch, index) rather than from which worker happened to load it.

Resume: the position that matters is what the *trainer* has consumed, not how far the DataLoader's workers have
read ahead. ResumableDataLoader counts the batches it hands out and keeps the sampler's `consumed` up to date, so

    state = loader.state_dict()          # {"epoch": e, "consumed": n, ...}: save with each checkpoint
    loader.load_state_dict(state)        # after restart: the next batch is the one that would have come next

`build_dataloader(...)` makes such a loader for the current torch.distributed rank (a LazyCall target).

Preemption: the loader's worker processes ignore SIGTERM, SIGUSR1 and SIGINT (torchrun and Slurm signal them along
with their rank, and a worker killed by the signal would crash the rank before it saves); the rank decides what to do
(cosmos_transfer/trainer/signals.py).
"""

from __future__ import annotations

import abc
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from cosmos_transfer.config.errors import DataError, UserError
from cosmos_transfer.trainer.signals import ignore_stop_signals_in_worker, stop_signals_blocked


class ResumableDistributedSampler(Sampler):
    """Yields (epoch, index) pairs: this rank's share of a (seed, epoch)-shuffled epoch, from `consumed` on."""

    def __init__(
        self,
        dataset_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ):
        if dataset_size <= 0:
            raise DataError(f"the dataset has no samples (dataset_size={dataset_size})")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not valid for world_size {world_size}")
        if dataset_size < world_size:
            raise DataError(f"dataset of {dataset_size} samples is too small for {world_size} data-parallel ranks "
                            "(each needs at least one); add clips or use fewer ranks")
        self.dataset_size = dataset_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.consumed = 0  # samples of this epoch already handed to the trainer on this rank

    @property
    def samples_per_rank(self) -> int:
        return self.dataset_size // self.world_size  # the tail is dropped so that no rank repeats a sample

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's indices for `epoch`, in order."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.dataset_size, generator=generator).tolist()
        else:
            order = list(range(self.dataset_size))
        return order[self.rank :: self.world_size][: self.samples_per_rank]

    def __len__(self) -> int:
        return self.samples_per_rank - self.consumed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for index in self.epoch_indices(epoch)[self.consumed :]:
            yield (epoch, index)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self.consumed = 0

    def advance(self, num_samples: int) -> None:
        """Record that the trainer has consumed `num_samples` more samples of the current epoch."""
        self.consumed += num_samples

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "dataset_size": self.dataset_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "dataset_size", "world_size"):
            if key in state and int(state[key]) != getattr(self, key):
                raise DataError(
                    f"data-loader state was saved with {key}={state[key]} but this run has {key}={getattr(self, key)}; "
                    f"exact resume needs the same dataset, seed and number of data-parallel ranks"
                )
        self.epoch = int(state["epoch"])
        self.consumed = int(state["consumed"])
        if not 0 <= self.consumed <= self.samples_per_rank:
            raise DataError(f"data-loader state has consumed={self.consumed}, outside 0..{self.samples_per_rank}")


class PositionedDataLoader(DataLoader, abc.ABC):
    """A DataLoader that records each batch it hands out in `self.position` (its sampler or batch sampler, which holds
    epoch, consumed, set_epoch, state_dict and load_state_dict).

    Iterating runs through the rest of the current epoch; when an epoch is exhausted the next `iter()` starts the
    following one. `state_dict()` / `load_state_dict()` save and restore the position exactly. Its worker processes
    ignore the stop signals (module docstring); a `worker_init_fn` given here runs after that. Subclasses say when
    an epoch is used up and how far a batch advances the position.
    """

    position: Any

    def __init__(self, dataset: Dataset, **kwargs):
        kwargs["worker_init_fn"] = ignore_stop_signals_in_worker(then=kwargs.get("worker_init_fn"))
        super().__init__(dataset, **kwargs)

    @abc.abstractmethod
    def _epoch_used_up(self) -> bool:
        """Whether the current epoch has no batch left."""

    @abc.abstractmethod
    def _advance(self, batch) -> None:
        """Move the position past `batch`."""

    def __iter__(self):
        if self._epoch_used_up():
            self.position.set_epoch(self.position.epoch + 1)  # the previous epoch was used up: start the next one
        with stop_signals_blocked():  # workers start here: none may die of a signal before it ignores it
            batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except UserError as error:  # e.g. too many bad clips, met in a worker process
                raise _without_worker_traceback(error) from error
            self._advance(batch)
            yield batch

    @property
    def epoch(self) -> int:
        return self.position.epoch

    def set_epoch(self, epoch: int) -> None:
        self.position.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return self.position.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position.load_state_dict(state)


def _without_worker_traceback(error: UserError) -> UserError:
    """A user error raised in a loader worker with its own message again: torch re-raises it in the rank with the
    worker's whole traceback as its message ("Caught DataError in DataLoader worker process 0. Original Traceback
    ..., <module>.DataError: <message>"), which would be printed instead of the one paragraph the error is."""
    text = str(error)
    if not text.startswith(f"Caught {type(error).__name__} in DataLoader worker"):
        return error  # raised in this process: already its own message
    header = f"{type(error).__module__}.{type(error).__qualname__}: "
    at = text.rfind(header)
    if at < 0:
        return error
    try:
        return type(error)(text[at + len(header):].rstrip("\n"))
    except TypeError:  # an error type built from other arguments than its message: kept as torch gave it
        return error


class ResumableDataLoader(PositionedDataLoader):
    """A PositionedDataLoader of fixed-size batches over a ResumableDistributedSampler (counted in samples)."""

    def __init__(self, dataset: Dataset, sampler: ResumableDistributedSampler, **kwargs):
        if not isinstance(sampler, ResumableDistributedSampler):
            raise TypeError(f"ResumableDataLoader needs a ResumableDistributedSampler, got {type(sampler).__name__}")
        kwargs.setdefault("drop_last", True)
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.position = sampler

    def _epoch_used_up(self) -> bool:
        usable = self.sampler.samples_per_rank
        if self.drop_last:
            usable -= usable % self.batch_size
        return self.sampler.consumed >= usable

    def _advance(self, batch) -> None:
        self.sampler.advance(_batch_length(batch))


def _batch_length(batch) -> int:
    if isinstance(batch, dict):
        if "sample_index" in batch:
            return len(batch["sample_index"])
        batch = next(iter(batch.values()))
    if isinstance(batch, (list, tuple)):
        return len(batch[0]) if batch and hasattr(batch[0], "__len__") else len(batch)
    return len(batch)


def data_parallel_rank_and_size(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """`rank` and `world_size` where given, torch.distributed's otherwise (0 and 1 without it)."""
    dist_rank, dist_world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() \
        else (0, 1)
    return (dist_rank if rank is None else rank), (dist_world if world_size is None else world_size)


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    shuffle: bool = True,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
) -> ResumableDataLoader:
    """A resumable, sharded DataLoader for `dataset`. rank/world_size default to torch.distributed's (0/1 without it)."""
    rank, world_size = data_parallel_rank_and_size(rank, world_size)
    sampler = ResumableDistributedSampler(len(dataset), rank=rank, world_size=world_size, shuffle=shuffle, seed=seed)
    if sampler.samples_per_rank < batch_size:
        raise DataError(
            f"each of {world_size} ranks gets {sampler.samples_per_rank} samples of the {len(dataset)} in the dataset, "
            f"fewer than one batch of {batch_size}"
        )
    return ResumableDataLoader(
        dataset,
        sampler=sampler,
        batch_size=batch_size,
        drop_last=True,
        **worker_options(num_workers, pin_memory, persistent_workers, prefetch_factor),
    )


def worker_options(num_workers: int = 0, pin_memory: bool = False, persistent_workers: bool = False,
                   prefetch_factor: int | None = None) -> dict:
    """DataLoader keyword arguments for the worker processes (the options that need workers only with workers)."""
    options: dict[str, Any] = {"num_workers": num_workers,
                               "pin_memory": pin_memory and torch.cuda.is_available()}  # pinning needs an accelerator
    if num_workers > 0:
        options["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            options["prefetch_factor"] = prefetch_factor
    return options
