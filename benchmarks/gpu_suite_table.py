#!/usr/bin/env python
"""The summary table of a benchmarks/gpu_suite.sh run, from the logs it left in OUT_DIR (it runs nothing on a GPU).

    python benchmarks/gpu_suite_table.py OUT_DIR      # reads OUT_DIR/steps.tsv, device.txt and <step>.log

MFU of a DiT step = the step's FLOPs / median wall step time / the GPU's dense bf16 peak (cosmos_transfer/flops.py:
the FLOP count and the peak table). Transfer1's FLOPs come from a GeneralDIT built on the meta device with the sizes
the suite passed to dit_step.py; the 2.5 network's from the same per-block count (same self-attention ->
cross-attention -> MLP maths) plus its text projection (text_len x text_width -> 1024). diffusers' network computes
the same function at the same size, so its MFU uses the same count.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _option(command: str, name: str, default: int) -> int:
    match = re.search(rf"--{name} (\d+)", command)
    return int(match.group(1)) if match else default


def _table_rows(log: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in log.splitlines()
            if line.startswith("|") and not line.startswith("| ---")]


def dit_flops(name: str, command: str) -> float:
    """FLOPs of one training step of the network a dit step ran (dit_step.py / dit_v2_5_step.py defaults)."""
    import torch

    from cosmos_transfer import flops

    blocks, channels = _option(command, "blocks", 8), _option(command, "channels", 512)
    heads, frames, size = _option(command, "heads", 8), _option(command, "frames", 8), _option(command, "size", 32)
    text_len = _option(command, "text-len", 512)
    latent = (1, 16, frames, size, size)
    if "dit_v2_5_step" in command:
        shape = flops.DiTShape(model_channels=channels, num_blocks=blocks, mlp_ratio=4.0, in_channels=17,
                               out_channels=16, patch_spatial=2, patch_temporal=1, crossattn_emb_channels=1024)
        text_width = _option(command, "text-width", 100352)
        return flops.dit_training_step_flops(shape, latent, text_len) + 3 * 2 * text_len * text_width * 1024
    from cosmos_transfer.networks.dit import GeneralDIT

    with torch.device("meta"):
        net = GeneralDIT(max_img_h=size, max_img_w=size, max_frames=frames, in_channels=16, out_channels=16,
                         model_channels=channels, num_blocks=blocks, num_heads=heads, crossattn_emb_channels=1024,
                         rope_t_extrapolation_ratio=2.0)
    return flops.dit_training_step_flops(net, latent, text_len)


def peak_tflops(device_line: str) -> float | None:
    from cosmos_transfer.flops import GPU_PEAK_TFLOPS

    return next((peak for key, peak in GPU_PEAK_TFLOPS.items() if key in device_line), None)


def summarize(name: str, command: str, log: str, peak: float | None) -> str:
    """One line of result for a step from its log."""
    rows = _table_rows(log)
    if name.startswith("dit"):
        medians = {row[0]: float(row[1]) for row in rows if row and row[0] in ("ours", "diffusers")}
        if not medians:
            return "no step-time table in the log"
        step_flops = dit_flops(name, command)
        parts = []
        for model, seconds in medians.items():
            mfu = f", MFU {100 * step_flops / seconds / (peak * 1e12):.1f}%" if peak else ", MFU: unknown GPU peak"
            parts.append(f"{model} {seconds * 1e3:.1f} ms{mfu}")
        return f"{'; '.join(parts)} ({step_flops / 1e12:.2f} TFLOP per step)"
    if name.startswith("memory"):
        step = [row for row in rows if len(row) >= 6 and row[0] != "device"]
        if not step:
            return "no step table in the log"
        device, seconds, allocated, reserved, ema = step[-1][:5]
        return f"peak allocated {allocated} GiB (reserved {reserved}; + EMA {ema} GiB not built), step {seconds} s"
    if name == "tokenizer":
        cuda = [row for row in rows if len(row) >= 5 and row[1] == "cuda"]
        return "; ".join(f"{row[0]}: ours {row[2]} frames/s, diffusers {row[3]} ({row[4]})" for row in cuda) or \
            "no CUDA rows in the log"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    steps_file = out / "steps.tsv"
    if not steps_file.is_file():
        print(f"gpu_suite_table: {steps_file} does not exist: run benchmarks/gpu_suite.sh first", file=sys.stderr)
        return 2
    device = (out / "device.txt").read_text().strip() if (out / "device.txt").is_file() else "unknown device"
    peak = peak_tflops(device)
    print(f"# GPU suite: {device}\n")
    print("| measurement | result | exit status | wall s | command |")
    print("| --- | --- | ---: | ---: | --- |")
    for line in steps_file.read_text().splitlines():
        name, status, milliseconds, command = line.split("\t")
        log = (out / f"{name}.log").read_text(errors="replace") if (out / f"{name}.log").is_file() else ""
        if status == "0":
            try:
                result = summarize(name, command, log, peak)
            except Exception as error:  # noqa: BLE001 - one row per step, whatever went wrong in reading it
                result = f"log not understood: {type(error).__name__}: {error}"
        elif status in ("124", "137"):
            result = f"ran out of its time limit (log: {name}.log)"
        else:
            last = next((text for text in reversed(log.strip().splitlines()) if text.strip()), "")
            result = f"failed: {last[:200]}"
        print(f"| {name} | {result} | {status} | {int(milliseconds) / 1e3:.1f} | `{command}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
