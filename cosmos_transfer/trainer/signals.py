"""Preemption: SIGTERM or SIGUSR1 (what Slurm, Kubernetes and most schedulers send before killing a job) asks the run
to stop.

The handler only sets a flag. The trainer checks it at every step boundary, and also between validation batches and
before every network call of the validation sampler, so that a save starts within seconds of the signal; all ranks
agree through one tiny all-reduce (a signal may reach the ranks at different moments, or only one of them). Then it
saves a checkpoint and exits 0.

torchrun forwards the signal to the whole process group of each rank, data-loader workers included (Slurm signals
every process of the job step). A worker that died of it would take the rank down before the save, so data-loader
workers ignore SIGTERM, SIGUSR1 and SIGINT from anyone but their own rank: the rank decides
(`ignore_stop_signals_in_worker`, installed by cosmos_transfer/data/sampler.py, and `stop_signals_blocked` around the
start of the workers). docs/TRAINING.md says which torchrun shutdown timeout to set.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from typing import Callable, Iterator

from torch import nn

# What the rank treats as "save and stop".
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# What data-loader workers ignore: the stop signals, and Ctrl-C (which a terminal sends to the whole process group).
WORKER_IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopRequested(Exception):
    """Raised inside validation sampling when the ranks agree to stop: the pass is abandoned so the save can start."""


class PreemptionHandler:
    """Installs handlers for SIGTERM/SIGUSR1 that record the request; `restore()` puts the old handlers back."""

    SIGNALS = STOP_SIGNALS

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "PreemptionHandler":
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            print(
                f"[cosmos_transfer] received {signal.Signals(signum).name}: saving a checkpoint at the next step "
                "boundary, then exiting",
                file=sys.stderr,
                flush=True,
            )
        self.received = signum

    @property
    def requested(self) -> bool:
        return self.received is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class ignore_stop_signals_in_worker:  # noqa: N801 - used like a function (a DataLoader worker_init_fn)
    """A DataLoader `worker_init_fn`: the worker ignores WORKER_IGNORED_SIGNALS, then `then(worker_id)` runs (if any).

    A class rather than a closure so that it pickles (workers started with "spawn" or "forkserver"). PyTorch's worker
    installs its own SIGTERM handler (which kills the worker) before calling worker_init_fn; this replaces it.
    One exception: SIGTERM from the worker's own rank still ends it. That is how Python's multiprocessing stops
    daemonic workers when the rank exits (torch leaves it to that at interpreter exit); a worker deaf to it would
    keep the rank from exiting. So SIGTERM stays blocked and a thread takes each one, exiting only when the rank sent it.
    """

    def __init__(self, then: Callable[[int], None] | None = None) -> None:
        self.then = then

    def __call__(self, worker_id: int) -> None:
        others = tuple(sig for sig in WORKER_IGNORED_SIGNALS if sig != signal.SIGTERM)
        for sig in others:
            signal.signal(sig, signal.SIG_IGN)
        # Started under stop_signals_blocked (the mask is inherited): a signal that arrived since is pending and is
        # discarded now that it is ignored. SIGTERM stays blocked for _exit_on_sigterm_from (threads inherit the mask).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        signal.pthread_sigmask(signal.SIG_UNBLOCK, others)
        creator = multiprocessing.parent_process()
        rank_pid = creator.pid if creator is not None else os.getppid()
        threading.Thread(target=_exit_on_sigterm_from, args=(rank_pid,), name="sigterm_from_rank", daemon=True).start()
        if self.then is not None:
            self.then(worker_id)


def _exit_on_sigterm_from(rank_pid: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == rank_pid:
            os._exit(0)


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Hold back WORKER_IGNORED_SIGNALS in this thread while data-loader workers start.

    Between its start and worker_init_fn a new worker would die of SIGTERM; started with the signals blocked (the
    mask is inherited), it gets them only after it ignores them. Here a signal that arrives meanwhile is delivered
    when the block ends, to the usual handler.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_IGNORED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def stop_before_each_call(modules: list[nn.Module], stop_requested: Callable[[], bool]) -> Iterator[None]:
    """Raise StopRequested before a call of any of `modules` once `stop_requested()` is true.

    For loops the trainer does not own (a model's sampler): `stop_requested` must be a collective that every rank
    calls the same number of times, which holds because every rank runs the same sampling steps.
    """

    def check(module: nn.Module, args) -> None:
        if stop_requested():
            raise StopRequested("sampling")

    # prepend: before FSDP2's own pre-forward hook gathers the shards (raising after it would leave them gathered).
    hooks = [module.register_forward_pre_hook(check, prepend=True) for module in modules]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
