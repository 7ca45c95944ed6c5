"""The checks scripts/train.py makes before building anything (cosmos_transfer/preflight.py).

The reproduction (issue 16, item 1): the documented 7B post-training command of docs/TRAINING.md step 3, on a
machine without the downloaded files, built the whole 7B in host memory (19 GB, a minute) and ended in an allocator
traceback. It must stop within seconds at a few hundred MB, naming everything missing in one message. The child runs
under an address-space limit, so that the old behaviour fails fast here instead of filling a shared machine.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap

import pytest
from tests.helpers import REPO_DIR as ROOT

TRAIN = os.path.join(ROOT, "scripts", "train.py")

# Runs the command with a 10 GiB address-space limit and prints wall time and the child's peak RSS as JSON.
_MEASURE = textwrap.dedent("""
    import json, resource, subprocess, sys, time
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (10 * 2**30, 10 * 2**30))
    start = time.time()
    result = subprocess.run(sys.argv[1:], preexec_fn=limit, capture_output=True, text=True, timeout=300)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"rc": result.returncode, "seconds": time.time() - start, "peak_mb": peak_kib / 1024,
                      "stdout": result.stdout, "stderr": result.stderr}))
""")


def _documented_command(experiment: str) -> list[str]:
    text = open(os.path.join(ROOT, "docs", "TRAINING.md"), encoding="utf-8").read()
    (line,) = [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
               for line in block.splitlines()
               if "torchrun" in line and f"experiment={experiment} " in line and "load_path" in line]
    return shlex.split(line)


def _run_documented(experiment: str, tmp_path) -> dict:
    """The documented torchrun command of `experiment`, from a folder without downloads, measured by _MEASURE."""
    words = _documented_command(experiment)
    script_at = next(i for i, w in enumerate(words) if w.endswith("train.py"))
    launcher = [sys.executable, "-m", "torch.distributed.run", *words[1:script_at]]
    command = launcher + [TRAIN] + [w.replace("configs/train.py", os.path.join(ROOT, "configs", "train.py"))
                                    for w in words[script_at + 1:]]
    env = {k: v for k, v in os.environ.items() if k != "COSMOS_CHECKPOINT_DIR"}
    env["OUTPUT_ROOT"] = str(tmp_path / "outputs")
    result = subprocess.run([sys.executable, "-c", _MEASURE, *command], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=400)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_documented_7b_command_without_downloads_stops_fast_naming_everything(tmp_path):
    measured = _run_documented("ctrl_7b_edge_posttrain", tmp_path)
    stderr = measured["stderr"]
    print(f"stopped in {measured['seconds']:.1f} s, peak RSS {measured['peak_mb']:.0f} MB")
    assert measured["rc"] != 0
    assert "can't allocate memory" not in stderr and "[rank0]: Traceback" not in stderr, stderr[-3000:]
    message = stderr.split("error: ", 1)[1].split("(torchrun's")[0]
    for missing in ("checkpoint.load_path 'checkpoints/ctrl_7b_edge_init.safetensors' does not exist",
                    "tokenizer folder 'checkpoints/nvidia/Cosmos-Tokenize1-CV8x8x8-720p' does not exist",
                    "dataloader_train.dataset.root 'datasets/my_clips/train' does not exist",
                    "dataloader_val.dataset.root 'datasets/my_clips/val' does not exist"):
        assert missing in message, message
    from cosmos_transfer.preflight import host_available_bytes

    if host_available_bytes() < 28 * 2**30:  # the 7B's 30 GiB of training state cannot fit this host
        assert "of host memory to train on the CPU" in message and "30.1 GiB" in message
        assert "Options:" in message and "a smaller experiment" in message
    assert measured["seconds"] < 60, measured["seconds"]
    assert measured["peak_mb"] < 1024, measured["peak_mb"]
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("checkpoints"))


def test_documented_2p5_command_without_downloads_names_the_family_s_own_files(tmp_path):
    """docs/TRAINING.md's Transfer2.5-2B command without the downloads: the Wan2.1 VAE's tokenizer.pth is named (it
    was not checked), and the hints are the 2.5 family's (the released file as load path), not Transfer1's step 1."""
    measured = _run_documented("transfer2p5_2b_edge_posttrain", tmp_path)
    stderr = measured["stderr"]
    assert measured["rc"] != 0 and "[rank0]: Traceback" not in stderr, stderr[-3000:]  # torchrun's own follows
    message = stderr.split("error: ", 1)[1].split("(torchrun's")[0]
    assert "Wan2.1 VAE file 'checkpoints/nvidia/Cosmos-Predict2.5-2B/tokenizer.pth' does not exist" in message
    assert "a released Transfer2.5 file is the load path as it is" in message
    assert "Transfer1" not in message and "T5" not in message
    assert "dataloader_train.dataset.root 'datasets/my_clips/train' does not exist" in message
    assert "Cosmos-Reason1 embeddings" in message


def test_memory_problems_name_the_figures_and_options():
    from cosmos_transfer.memory import GIB, MemoryReport
    from cosmos_transfer.preflight import memory_problems

    report = MemoryReport(trainable_parameters=10**9, frozen_parameters=7 * 10**9,
                          trainable_parameter_bytes=4 * GIB, frozen_parameter_bytes=14 * GIB, gradient_bytes=4 * GIB,
                          optimizer_state_bytes=8 * GIB, buffer_bytes=0, tokenizer_bytes=0, ema_bytes=4 * GIB)
    # 34 GiB of state: refused on one 24 GiB GPU, accepted on two (17 GiB each); host needs the weights per rank.
    one = memory_problems(report, "", world_size=1, local_world_size=1, device_type="cuda",
                          device_bytes=24 * GIB, host_bytes=64 * GIB)
    assert len(one) == 1 and "34.0 GiB per GPU on 1 GPU(s), the GPU has 24.0 GiB" in one[0]
    assert "more GPUs" in one[0]
    assert memory_problems(report, "", world_size=2, local_world_size=2, device_type="cuda",
                           device_bytes=24 * GIB, host_bytes=64 * GIB) == []
    eight = memory_problems(report, "", world_size=8, local_world_size=8, device_type="cuda",
                            device_bytes=80 * GIB, host_bytes=100 * GIB)
    assert len(eight) == 1 and "144.0 GiB of host memory to build the model on each rank" in eight[0]
    cpu = memory_problems(report, "", world_size=1, local_world_size=1, device_type="cpu", device_bytes=None,
                          host_bytes=20 * GIB)
    assert len(cpu) == 1 and "34.0 GiB of host memory to train on the CPU" in cpu[0] and "machine with GPUs" in cpu[0]


def test_world_size_and_dataset_problems(tmp_path):
    from cosmos_transfer.preflight import check_paths, world_size_problems
    from types import SimpleNamespace as NS

    root = tmp_path / "clips"
    (root / "videos").mkdir(parents=True)
    for i in range(3):
        (root / "videos" / f"c{i}.mp4").write_bytes(b"")
    dataset = {"root": str(root), "text_embedding_folder": "minilm_l6"}
    config = NS(job=NS(path=str(tmp_path / "job")), checkpoint=NS(load_path=""), model=None,
                trainer=NS(fsdp_shard_size=3), dataloader_train={"batch_size": 2, "dataset": dataset},
                dataloader_val=None)
    problems = world_size_problems(config, world_size=4, local_world_size=4, device_type="cuda", cuda_devices=2)
    assert any("fsdp_shard_size=3 must divide the number of ranks (4)" in p for p in problems)
    assert any("4 processes per node but 2 GPU(s)" in p for p in problems)
    assert any("3 clip(s)" in p and "4 rank(s) x batch 2" in p for p in problems)
    (paths,) = check_paths(config)
    assert "text-embedding folder" in paths and "minilm_l6" in paths and "prepare_dataset.py" in paths


def test_a_job_that_resumes_does_not_need_load_path(tmp_path):
    from cosmos_transfer.preflight import check_paths
    from types import SimpleNamespace as NS

    config = NS(job=NS(path=str(tmp_path)), checkpoint=NS(load_path="gone.safetensors"), model=None,
                dataloader_train=None, dataloader_val=None)
    assert len(check_paths(config)) == 1
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest_checkpoint.txt").write_text("iter_000000010\n")
    assert check_paths(config) == []


@pytest.mark.parametrize("skip", [False, True])
def test_skip_checks_flag(tmp_path, skip):
    """--skip-checks goes past the checks (and then fails where the build does); without it, the checks answer."""
    args = [TRAIN, "--config", os.path.join(ROOT, "configs", "train.py"), *(["--skip-checks"] if skip else []), "--",
            "experiment=example_tiny", "dataloader_train.dataset.root=nowhere", "trainer.max_iter=1"]
    result = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OUTPUT_ROOT": str(tmp_path / "out")})
    assert result.returncode != 0
    assert ("problem(s) found before building anything" in result.stderr) is not skip, result.stderr[-2000:]


def test_documented_7b_inference_command_without_downloads_names_everything(tmp_path):
    """docs/INFERENCE.md's 7B command on a machine without the files: one message listing each missing input."""
    text = open(os.path.join(ROOT, "docs", "INFERENCE.md"), encoding="utf-8").read()
    (line,) = [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
               for line in block.splitlines() if "scripts/inference.py" in line and "ctrl_7b_edge_posttrain" in line]
    words = shlex.split(line)
    command = [sys.executable, os.path.join(ROOT, words[1]), *words[2:]]
    env = {k: v for k, v in os.environ.items() if k != "COSMOS_CHECKPOINT_DIR"}
    result = subprocess.run([sys.executable, "-c", _MEASURE, *command], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=400)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    err = measured["stderr"]
    assert measured["rc"] == 2 and "Traceback" not in err, err[-3000:]
    assert "4 problem(s) found before reading anything" in err
    for missing in ("--spec 'spec.json' does not exist", "text encoder 'checkpoints/google-t5/t5-11b'",
                    "--checkpoint checkpoints/transfer1_edge.safetensors does not exist",
                    "tokenizer folder 'checkpoints/nvidia/Cosmos-Tokenize1-CV8x8x8-720p' does not exist"):
        assert missing in err, err
    assert measured["peak_mb"] < 1024, measured["peak_mb"]


def test_inference_memory_problems_against_the_host(monkeypatch):
    from cosmos_transfer import preflight
    from cosmos_transfer.config.compose import override
    from configs.train import make_config

    config = override(make_config(), ["--", "experiment=ctrl_7b_edge_posttrain"])
    monkeypatch.setattr(preflight, "host_available_bytes", lambda: 8 * 2**30)
    (problem,) = preflight.inference_memory_problems(config, device_type="cpu", half_precision=False)
    assert "16.8 GiB of host memory to build and load, this machine has 8.0 GiB" in problem
    monkeypatch.setattr(preflight, "host_available_bytes", lambda: 64 * 2**30)
    assert preflight.inference_memory_problems(config, device_type="cpu", half_precision=False) == []
