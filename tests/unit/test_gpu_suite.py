"""benchmarks/gpu_suite.sh without a GPU: it stops at once with a clear message and a nonzero status, its plan names
existing scripts and options they accept, and its table reads the scripts' own output (MFU from flops.py)."""

import io
import os
import re
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"


def _env() -> dict:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}


@pytest.mark.parametrize("gate", ["CUDA_VISIBLE_DEVICES", "nvidia-smi", "torch"])
def test_without_a_gpu_the_suite_fails_fast_and_clearly(tmp_path, gate):
    """Each of the three checks stops it: an empty CUDA_VISIBLE_DEVICES, no driver tool, torch seeing no GPU (a
    stand-in nvidia-smi that lists one gets past the first two, as on a machine whose torch is a CPU build)."""
    env = _env()
    if gate != "CUDA_VISIBLE_DEVICES":
        env.pop("CUDA_VISIBLE_DEVICES")
        tools = tmp_path / "bin"
        tools.mkdir()
        if gate == "torch":
            (tools / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: stand-in'\n")
            (tools / "nvidia-smi").chmod(0o755)
        env["PATH"] = f"{tools}:/usr/bin:/bin"  # no real nvidia-smi on the CPU machines that run the tests
    out = tmp_path / "suite"
    start = time.monotonic()
    result = subprocess.run(["bash", str(SUITE), str(out)], env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no CUDA GPU" in result.stderr and "need one GPU" in result.stderr
    assert {"CUDA_VISIBLE_DEVICES": "CUDA_VISIBLE_DEVICES=''", "nvidia-smi": "nvidia-smi is missing",
            "torch": "torch.cuda.is_available() is False"}[gate] in result.stderr
    assert not out.exists()  # nothing measured, nothing written
    assert elapsed < (60 if gate == "torch" else 5), f"took {elapsed:.0f} s to notice there is no GPU"


def test_the_plan_runs_existing_scripts_with_options_they_accept():
    result = subprocess.run(["bash", str(SUITE), "--plan"], env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    plan = result.stdout.strip().splitlines()
    names = [line.split(" ", 1)[0] for line in plan]
    assert names == ["dit_sdpa", "dit_te", "dit_v2_5", "memory_7b", "memory_transfer2p5_2b", "tokenizer"]
    limits = [int(re.search(r"\(limit (\d+) s\)", line).group(1)) for line in plan]
    assert sum(limits) + 60 < 600  # the whole suite stays under 10 minutes, start-up and table included
    for line in plan:
        command = line.split(": ", 1)[1].split()
        script = ROOT / command[0]
        assert script.is_file(), script
        source = script.read_text()
        for option in (word for word in command[1:] if word.startswith("--")):
            assert re.search(rf"add_argument\(\s*\"{re.escape(option)}\"", source), f"{script.name} has no {option}"
        if "--device" in command:
            assert command[command.index("--device") + 1] == "cuda"


def test_the_table_reads_the_step_logs_and_computes_mfu(tmp_path):
    sys.path.insert(0, str(ROOT))
    from benchmarks import dit_step, gpu_suite_table
    from cosmos_transfer.flops import GPU_PEAK_TFLOPS

    command = "benchmarks/dit_step.py --device cuda --blocks 2 --channels 256 --heads 4 --frames 4 --size 16"
    result = dict(times={"ours": [0.010, 0.012, 0.011], "diffusers": [0.020, 0.022, 0.021]},
                  cpu_times={"ours": [0.01] * 3, "diffusers": [0.02] * 3}, ratios=[0.5, 0.55, 0.52],
                  cpu_ratios=[0.5] * 3, memory={})
    log = io.StringIO()
    with redirect_stdout(log):
        dit_step.print_table("GeneralDIT fwd+bwd (a test's figures)", result)
    (tmp_path / "dit_sdpa.log").write_text(log.getvalue())
    (tmp_path / "memory_7b.log").write_text("killed\n")
    (tmp_path / "device.txt").write_text("NVIDIA H100 80GB HBM3 | torch 2.x\n")
    (tmp_path / "steps.tsv").write_text(f"dit_sdpa\t0\t12345\t{command}\n"
                                        "memory_7b\t124\t120000\tbenchmarks/ctrl_memory.py --measure\n")
    out = io.StringIO()
    with redirect_stdout(out):
        assert gpu_suite_table.main([str(tmp_path)]) == 0
    table = out.getvalue()
    flops = gpu_suite_table.dit_flops("dit_sdpa", command)
    peak = GPU_PEAK_TFLOPS["H100"] * 1e12
    assert f"ours 11.0 ms, MFU {100 * flops / 0.011 / peak:.1f}%" in table
    assert f"diffusers 21.0 ms, MFU {100 * flops / 0.021 / peak:.1f}%" in table
    assert "| memory_7b | ran out of its time limit (log: memory_7b.log) | 124 | 120.0 |" in table


def test_the_table_needs_a_suite_run(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu_suite_table

    assert gpu_suite_table.main([str(tmp_path)]) == 2
    assert "run benchmarks/gpu_suite.sh first" in capsys.readouterr().err


def test_the_suite_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SUITE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
