#!/usr/bin/env python
"""Training-step figures of an experiment: step time, data wait, tokens/s, TFLOP/s, MFU and peak memory.

Runs the real trainer (scripts/train.py under torchrun) for a few iterations in a scratch job folder, without
validation and with one checkpoint at the end, then summarizes its metrics.jsonl (the first --warmup iterations are
left out: allocation, compilation, caches) as a Markdown table.

    # the CPU demo (issue 7, item 10: the demo's CPU step time)
    python benchmarks/train_step.py --nproc 2 -- experiment=demo_edge_tiny trainer.max_iter=40

    # on a GPU: the 7B-shaped control model, FSDP2 + activation checkpointing, random weights (no load_path);
    # the experiment's data must exist at the resolution it asks for (e.g. 121 frames at 1280 x 704)
    python benchmarks/train_step.py --nproc 1 -- experiment=ctrl_7b_edge_posttrain checkpoint.load_path='' \\
        trainer.activation_checkpointing=full trainer.max_iter=8

MFU is reported against the device's dense bf16 peak (H100/H200: 989 TFLOP/s) and is null on a CPU unless
trainer.peak_tflops is given. There is no peer run in this benchmark: the issue compares MFU with the figure
torchtitan reports (33-39% on Llama 8B, H100), not with a run of another framework.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def summarize(metrics_path: Path, warmup: int) -> dict:
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    train = [m for m in lines if "event" not in m]
    measured = train[warmup:] if len(train) > warmup else train

    def median(key):
        values = [m[key] for m in measured if isinstance(m.get(key), (int, float))]
        return statistics.median(values) if values else None

    window = max(1, min(10, len(train) // 4))
    return {
        "iterations measured": len(measured),
        "step time (s, median)": median("step_time_s"),
        "data wait (s, median)": median("data_wait_s"),
        "tokens/s (all ranks)": median("tokens_per_s"),
        "TFLOP/s per device": median("tflops_per_s"),
        "MFU": median("mfu"),
        "peak memory (GiB, rank 0)": max((m["peak_memory_gb"] for m in train if m.get("peak_memory_gb")), default=None),
        f"mse, first {window} its (mean)": statistics.fmean(m["mse"] for m in train[:window]),
        f"mse, last {window} its (mean)": statistics.fmean(m["mse"] for m in train[-window:]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=1, help="processes (GPUs) on this machine")
    parser.add_argument("--warmup", type=int, default=5, help="first iterations left out of the medians")
    parser.add_argument("--keep", action="store_true", help="keep the scratch job folder (its path is printed)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. experiment=demo_edge_tiny")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="train_step_bench_")
    overrides = [*args.overrides, "trainer.validation_iter=0", "checkpoint.save_iter=1000000",
                 "trainer.progress_bar=false", "job.name=train_step_bench"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               str(ROOT / "scripts" / "train.py"), "--config=configs/train.py", "--", *overrides]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "OUTPUT_ROOT": scratch})
    if result.returncode != 0:
        print(f"training failed (exit {result.returncode}); job folder kept at {scratch}", file=sys.stderr)
        return result.returncode
    metrics = list(Path(scratch).glob("*/*/train_step_bench/metrics.jsonl"))
    if len(metrics) != 1:
        print(f"expected one metrics.jsonl under {scratch}, found {metrics}", file=sys.stderr)
        return 1
    figures = summarize(metrics[0], args.warmup)
    print(f"\n`python benchmarks/train_step.py --nproc {args.nproc} -- {' '.join(args.overrides)}`\n")
    print("| figure | value |\n| --- | --- |")
    for key, value in figures.items():
        shown = "n/a" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
        print(f"| {key} | {shown} |")
    if args.keep:
        print(f"\njob folder: {metrics[0].parent}")
    else:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
