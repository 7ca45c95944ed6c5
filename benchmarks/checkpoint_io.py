"""What the checkpoint manifest costs: DCP save time per GB with and without it, and the checksum itself.

The state is float32 tensors of `--gb` GB in all, shaped like a model's parameters and optimizer moments (a few
large matrices and many small vectors). Each round saves it twice into a fresh folder, alternating the order:
- "plain": `dcp.save` with DCP's FileSystemWriter, as before manifests;
- "manifest": the trainer's way, safe_dcp.ManifestWriter (each rank checksums the files it wrote) + finish_manifest
  (rank 0 adds .metadata and writes manifest.json).
Then it times `file_checksum` over the written files and `verify_checkpoint` (what resuming, export and load_path do
before reading), both with the files in the page cache, as they are right after a save.

    python benchmarks/checkpoint_io.py                 # 2 GB, 3 rounds, in the system temp folder
    python benchmarks/checkpoint_io.py --gb 4 --dir /path/on/the/checkpoint/disk
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings

import torch
import torch.distributed.checkpoint as dcp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cosmos_transfer.trainer import safe_dcp  # noqa: E402


def make_state(gb: float) -> dict[str, torch.Tensor]:
    """float32 tensors of `gb` GB: 90% in 4096-wide matrices, the rest in 4096-long vectors."""
    total = int(gb * 1e9 / 4)
    rows = max(1, int(0.9 * total) // (4096 * 4096))
    state = {f"model.blocks.{i}.weight": torch.randn(4096, 4096) for i in range(rows)}
    left = total - rows * 4096 * 4096
    for i in range(max(1, left // 4096)):
        state[f"optimizer.state.vec{i}.exp_avg"] = torch.randn(4096)
    return state


def size_gb(folder: str) -> float:
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)) / 1e9


_CHECKSUM_SECONDS = [0.0]  # time spent inside safe_dcp.checksums during the last save


def _timed_checksums(original):
    def checksums(folder, names):
        start = time.perf_counter()
        try:
            return original(folder, names)
        finally:
            _CHECKSUM_SECONDS[0] += time.perf_counter() - start

    return checksums


def save(state: dict[str, torch.Tensor], folder: str, with_manifest: bool) -> float:
    _CHECKSUM_SECONDS[0] = 0.0
    start = time.perf_counter()
    with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        if with_manifest:
            dcp.save(state, storage_writer=safe_dcp.ManifestWriter(folder, rank=0), no_dist=True)
            safe_dcp.finish_manifest(folder)
        else:
            dcp.save(state, storage_writer=dcp.FileSystemWriter(folder), no_dist=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.0, help="size of the state to save")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to write (the checkpoint disk)")
    args = parser.parse_args()
    state = make_state(args.gb)
    root = tempfile.mkdtemp(prefix="checkpoint_io_", dir=args.dir)
    safe_dcp.checksums = _timed_checksums(safe_dcp.checksums)
    times: dict[str, list[float]] = {"plain": [], "manifest": [], "in_save": [], "checksum": [], "verify": []}
    try:
        for round_index in range(args.rounds):
            order = ("plain", "manifest") if round_index % 2 == 0 else ("manifest", "plain")
            for mode in order:
                folder = os.path.join(root, f"{mode}_{round_index}")
                seconds = save(state, folder, with_manifest=mode == "manifest")
                gb = size_gb(folder)
                times[mode].append(seconds / gb)
                if mode == "manifest":
                    times["in_save"].append(_CHECKSUM_SECONDS[0] / gb)
                    names = [n for n in os.listdir(folder) if n != safe_dcp.MANIFEST_FILE]
                    start = time.perf_counter()
                    safe_dcp.checksums(folder, names)
                    times["checksum"].append((time.perf_counter() - start) / gb)
                    start = time.perf_counter()
                    assert safe_dcp.verify_checkpoint(folder)
                    times["verify"].append((time.perf_counter() - start) / gb)
                extra = f" (checksums {_CHECKSUM_SECONDS[0]:.2f} s)" if mode == "manifest" else ""
                print(f"round {round_index + 1}: {mode} save {seconds:.2f} s for {gb:.2f} GB{extra}", flush=True)
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.gb:g} GB state, {args.rounds} rounds, written to {args.dir}")
    print("| measure | median s/GB | min s/GB |")
    print("| --- | ---: | ---: |")
    labels = {"plain": "DCP save, no manifest", "manifest": "DCP save with manifest (trainer)",
              "in_save": "of which checksumming (inside the save)",
              "checksum": "CRC-32 of the written files (page cache)", "verify": "verify_checkpoint (page cache)"}
    for key, label in labels.items():
        print(f"| {label} | {statistics.median(times[key]):.3f} | {min(times[key]):.3f} |")
    share = statistics.median(times["in_save"]) / statistics.median(times["plain"])
    print(f"\nchecksumming inside the save = {100 * share:.1f}% of a plain save (medians); the difference of the two "
          "save rows is mostly the machine's noise (other work shares its disk and cores)")


if __name__ == "__main__":
    main()
