"""Data-loader workers and stop signals (issue 14, item 3), without torchrun: fast checks of the mechanism.

Workers ignore SIGTERM, SIGUSR1 and SIGINT from anyone but their own rank (torchrun and Slurm signal them along with
the rank; the rank decides), and still end when their rank stops them (multiprocessing terminates daemonic workers
with SIGTERM when the rank exits: a worker deaf to that would hang the rank's exit).
"""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time

from cosmos_transfer.data.sampler import build_dataloader
from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "tests"))
from trainer_toy import ToyVideoDataset  # noqa: E402


def worker_processes() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.is_alive()]


def test_workers_survive_stop_signals_from_other_processes():
    loader = build_dataloader(ToyVideoDataset(length=16), batch_size=2, num_workers=2, persistent_workers=True,
                              rank=0, world_size=1)
    batches = iter(loader)
    next(batches)
    workers = worker_processes()
    assert len(workers) == 2
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        for worker in workers:  # sent by another process, as torchrun's killpg or Slurm would
            subprocess.run(["kill", f"-{sig.name[3:]}", str(worker.pid)], check=True)
    time.sleep(0.5)
    assert all(worker.is_alive() for worker in workers)
    assert len([next(batches) for _ in range(5)]) == 5  # the rank still gets its batches
    for worker in workers:
        worker.terminate()  # SIGTERM from the rank itself ends the worker (as multiprocessing does at exit)
        worker.join(timeout=5)
    assert not any(worker.is_alive() for worker in workers)
    assert [worker.exitcode for worker in workers] == [0, 0]


def test_a_rank_with_live_workers_exits_promptly(tmp_path):
    # The rank leaves while its persistent workers are alive: at interpreter exit multiprocessing SIGTERMs them.
    script = tmp_path / "rank.py"
    script.write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
        "from cosmos_transfer.data.sampler import build_dataloader\n"
        "from trainer_toy import ToyVideoDataset\n"
        "loader = build_dataloader(ToyVideoDataset(length=16), batch_size=2, num_workers=2, persistent_workers=True,\n"
        "                          rank=0, world_size=1)\n"
        "batches = iter(loader)\n"
        "next(batches)\n"
        "print('exiting', flush=True)\n"
    )
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "exiting" in result.stdout, result.stderr[-3000:]
    assert time.monotonic() - start < 30
