"""Preemption: SIGTERM or SIGUSR1 (what Slurm and most schedulers send before killing a job) asks the run to stop.

The handler only sets a flag; the trainer checks it at the next step boundary, where all ranks agree through one
tiny all-reduce (a signal may reach the ranks at different moments, or only one of them), save a checkpoint, and
exit 0.
"""

from __future__ import annotations

import signal
import sys


class PreemptionHandler:
    """Installs handlers for SIGTERM/SIGUSR1 that record the request; `restore()` puts the old handlers back."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

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
