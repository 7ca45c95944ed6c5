#!/usr/bin/env python
"""The finite-value check on weights files (checkpoints/files.py check_finite, issue 25): the time a read takes with
the check against the same read without it, in the same run, for a file read whole and for a lazy (memory-mapped,
row-read) safetensors file, whose check pages every tensor in once. A safetensors read maps the file and touches no
value, so the peer that sizes the check is what loading does with the values anyway: copying them into a model's
tensors (`copy into a model`).

    python benchmarks/weights_check.py                 # a 512 MiB bf16 file of 7B-block-sized tensors, 5 rounds

Each round reads the file from the page cache (a first read warms it, as a second rank would find it), alternating
the order of the two variants. Prints each variant's median and the ratio; a ratio of 1.00 means the check is free.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MIB = 1 << 20


def make_file(path: str, mib: int) -> None:
    import torch
    from safetensors.torch import save_file

    rows = 4096 * 4096 * 2  # one 4096 x 4096 bf16 matrix: 32 MiB, a 7B attention projection's size
    tensors = {f"net.blocks.block{i}.weight": torch.randn(4096, 4096).to(torch.bfloat16)
               for i in range(max(1, mib * MIB // rows))}
    save_file(tensors, path)


def timed(read) -> float:
    start = time.perf_counter()
    read()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import torch

    from cosmos_transfer.checkpoints.files import check_finite, load_weights_file

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "weights.safetensors")
        make_file(path, args.mib)
        size = os.path.getsize(path) / MIB
        variants = {
            "whole, unchecked": lambda: load_weights_file(path, check_values=False),
            "whole, checked": lambda: load_weights_file(path),
            "lazy, unchecked": lambda: load_weights_file(path, lazy=True, check_values=False),
            "lazy, checked": lambda: load_weights_file(path, lazy=True),
            "check alone (whole file in memory)": None,
            "copy into a model (the peer)": None,
        }
        loaded = load_weights_file(path, check_values=False)
        targets = {name: torch.empty_like(tensor) for name, tensor in loaded.items()}
        check_finite(loaded, path)  # warms the page cache

        def copy_into_model() -> None:
            for name, tensor in loaded.items():
                targets[name].copy_(tensor)

        variants["check alone (whole file in memory)"] = lambda: check_finite(loaded, path)
        variants["copy into a model (the peer)"] = copy_into_model
        times: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                times[name].append(timed(variants[name]))
        median = {name: statistics.median(values) for name, values in times.items()}
        print(f"{size:.0f} MiB bf16 safetensors, {args.rounds} rounds, 1 thread, torch {torch.__version__}")
        for name, value in median.items():
            print(f"  {name:38s} median {value:.3f} s  (min {min(times[name]):.3f}, max {max(times[name]):.3f})")
        check, copy = median["check alone (whole file in memory)"], median["copy into a model (the peer)"]
        print(f"  the check / copying the values into a model = {check / copy:.2f}x")
        print(f"  check alone: {size / 1024 / median['check alone (whole file in memory)']:.1f} GiB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
