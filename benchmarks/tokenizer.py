"""Tokenizer encode+decode: our CV8x8x8 network against diffusers' AutoencoderKLCosmos, same weights, same input.

Peer: `diffusers.AutoencoderKLCosmos` (an independent implementation of the Cosmos-Tokenize1 CV8x8x8 network), built
at the same width and loaded with our weights (`diffusers_state_dict`), so both compute the same function.
Throughput: encode + decode of one clip under torch.no_grad, ours and theirs alternating in this process; frames/s
is input frames / seconds (median over rounds). Peak memory: on CPU, the growth of the peak resident set size
(VmHWM, reset just before) during one encode+decode, each run in a fresh subprocess (alternating, best of
`--memory-runs`); on CUDA, torch.cuda.max_memory_allocated over the same call. Both run in float32 on CPU and
bfloat16 on CUDA.

    python benchmarks/tokenizer.py              # CPU (and CUDA when present): the cases below
    python benchmarks/tokenizer.py --quick      # fewer rounds
    python benchmarks/tokenizer.py --device cuda --quick    # the GPU only (benchmarks/gpu_suite.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cosmos_transfer.tokenizers.cosmos_cv8x8x8 import CausalVideoAutoencoder, diffusers_state_dict  # noqa: E402

# (name, network settings, input [B,3,T,H,W]); widths are small enough for a 2-core CPU.
CASES = {
    "width32_17x128x128": (dict(channels=32), (1, 3, 17, 128, 128)),
    # larger frames: activations, not library buffers, dominate the peak memory
    "width32_9x256x256": (dict(channels=32), (1, 3, 9, 256, 256)),
    # the released network's width (128), on a small clip
    "width128_9x64x64": (dict(channels=128), (1, 3, 9, 64, 64)),
}


def build(impl: str, settings: dict, device: str, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    ours = CausalVideoAutoencoder(**settings).eval()
    if impl == "ours":
        return ours.to(device, dtype)
    from diffusers import AutoencoderKLCosmos

    c, m = ours.encoder.conv_in[0].conv3d.out_channels, settings.get("channels_mult", (2, 4, 4))
    theirs = AutoencoderKLCosmos(
        encoder_block_out_channels=(c, *[c * k for k in m]),
        decode_block_out_channels=(*[c * k for k in m], c * m[-1]),
        latents_mean=None,
        latents_std=None,
    ).eval()
    theirs.load_state_dict(diffusers_state_dict(ours), strict=True)
    return theirs.to(device, dtype)


def encode_decode(impl: str, model: torch.nn.Module, video: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if impl == "ours":
            return model.decode(model.encode(video))
        return model.decode(model.encode(video).latent_dist.mode()).sample


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as file:  # "5" resets the peak RSS (VmHWM) to the current RSS
        file.write("5")


def measure_memory_child(impl: str, case: str, device: str) -> None:
    """Run in a fresh process: print the peak memory growth (MiB) of one encode+decode as JSON."""
    settings, shape = CASES[case]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = build(impl, settings, device, dtype)
    video = torch.rand(shape, generator=torch.Generator().manual_seed(0)).mul(2).sub(1).to(device, dtype)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        encode_decode(impl, model, video)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        _reset_peak_rss()
        base = _status_kib("VmRSS")
        encode_decode(impl, model, video)
        peak = (_status_kib("VmHWM") - base) / 1024
    print(json.dumps({"peak_mib": peak}))


def peak_memory(impl: str, case: str, device: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--memory-child", impl, case, device],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        best = min(best, json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])
    return best


def run_case(case: str, device: str, rounds: int, memory_runs: int) -> dict:
    settings, shape = CASES[case]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    models = {impl: build(impl, settings, device, dtype) for impl in ("ours", "diffusers")}
    video = torch.rand(shape, generator=torch.Generator().manual_seed(0)).mul(2).sub(1).to(device, dtype)
    outputs = {impl: encode_decode(impl, models[impl], video).float() for impl in models}  # warm-up
    max_diff = (outputs["ours"] - outputs["diffusers"]).abs().max().item()
    times = {impl: [] for impl in models}
    for r in range(rounds):
        order = ("ours", "diffusers") if r % 2 == 0 else ("diffusers", "ours")
        for impl in order:
            _sync(device)
            start = time.perf_counter()
            encode_decode(impl, models[impl], video)
            _sync(device)
            times[impl].append(time.perf_counter() - start)
    del models
    frames = shape[0] * shape[2]
    result = {"case": case, "device": device, "max_abs_diff": max_diff}
    for impl in ("ours", "diffusers"):
        result[f"{impl}_fps"] = frames / statistics.median(times[impl])
    mem = {"ours": [], "diffusers": []}
    for r in range(memory_runs):  # alternate the subprocesses too
        for impl in (("ours", "diffusers") if r % 2 == 0 else ("diffusers", "ours")):
            mem[impl].append(peak_memory(impl, case, device, 1))
    for impl in mem:
        result[f"{impl}_peak_mib"] = min(mem[impl])
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        measure_memory_child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 timing rounds, 1 memory run each")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--memory-runs", type=int, default=2)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="where to run (default: the CPU, and the GPU when there is one)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, memory_runs = (3, 1) if args.quick else (args.rounds, args.memory_runs)
    devices = [args.device] if args.device != "all" else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [run_case(case, device, rounds, memory_runs) for device in devices for case in args.cases]
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} CPU threads; encode+decode, no_grad, batch 1")
    print("| case | device | ours frames/s | diffusers frames/s | speed ratio (ours/theirs) | ours peak MiB | "
          "diffusers peak MiB | memory ratio (ours/theirs) | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['case']} | {r['device']} | {r['ours_fps']:.2f} | {r['diffusers_fps']:.2f} | "
            f"{r['ours_fps'] / r['diffusers_fps']:.2f}x | {r['ours_peak_mib']:.0f} | {r['diffusers_peak_mib']:.0f} | "
            f"{r['ours_peak_mib'] / r['diffusers_peak_mib']:.2f} | {r['max_abs_diff']:.1e} |"
        )


if __name__ == "__main__":
    main()
