"""Start-up cost of `scripts/train.py --dryrun -- experiment=NAME` with many experiment files.

Peer: the way Cosmos does it (import every experiment module on every run, "eager"). Ours reads the files with `ast`
into an index cached by path and mtime and imports only the file that defines NAME.

Writes a realistic experiment folder (default 300 files of a few hundred lines of nested config, plus a few of about
4,000 lines with loop-generated experiments, like Cosmos' largest) and times, each as a fresh subprocess:

  single-cold / single-warm   a folder holding only the file that defines NAME (index cache removed / kept)
  lazy-cold / lazy-warm       the whole folder (index cache removed / kept)
  eager                       the whole folder, every module imported by the --config file before composing

Modes alternate within each round (this machine is noisy); ratios are computed per round, medians reported.

    .venv/bin/python benchmarks/config_startup.py --files 300 --rounds 5
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN = REPO_ROOT / "scripts" / "train.py"
CONFIG = REPO_ROOT / "configs" / "train.py"
HINT_KEYS = ["edge", "vis", "depth", "seg", "keypoint", "upscale"]


def _nested_block(index: int, depth: int, width: int, indent: str) -> list[str]:
    """Lines of a nested dict literal, like a network/data/trainer section of a Cosmos experiment."""
    lines = []
    for k in range(width):
        if depth > 0 and k % 3 == 0:
            lines.append(f"{indent}section_{k}=dict(")
            lines.extend(_nested_block(index + k, depth - 1, width, indent + "    "))
            lines.append(f"{indent}),")
        elif k % 3 == 1:
            lines.append(f"{indent}values_{k}=[{index % 7}, {k}, {index * k % 11}, {k + 0.5}],")
        else:
            lines.append(f"{indent}setting_{k}={(index * 31 + k) % 997}.0,")
    return lines


def _experiment_literal(variable: str, name_expression: str, index: int, depth: int, width: int) -> list[str]:
    lines = [
        f"{variable} = LazyDict(",
        "    dict(",
        '        defaults=[{"override /net": "tiny"}, {"override /scheduler": "constant"}, "_self_"],',
        f'        job=dict(group="bench", name={name_expression}),',
        f"        optimizer=dict(lr={1e-5 * (1 + index % 9):.6g}),",
        f"        trainer=dict(max_iter={100 + index}, logging_iter=10),",
        "        model=dict(",
        "            extra=dict(",
    ]
    lines += _nested_block(index, depth, width, " " * 16)
    lines += ["            ),", "        ),", "    )", ")"]
    return lines


HEADER = [
    '"""Generated benchmark experiment file."""',
    "",
    "from hydra.core.config_store import ConfigStore",
    "",
    "from cosmos_transfer.config.lazy import LazyCall as L",
    "from cosmos_transfer.config.lazy import LazyDict",
    "",
    "cs = ConfigStore.instance()",
    "",
]


def regular_file(index: int) -> str:
    """~300 lines: two experiments with literal names."""
    lines = list(HEADER)
    for j in range(2):
        name = f"bench_{index:04d}_{j}"
        lines += _experiment_literal(f"BENCH_{index}_{j}", f'"{name}"', index * 2 + j, depth=2, width=8)
        lines.append(f'cs.store(group="experiment", package="_global_", name="{name}", node=BENCH_{index}_{j})')
        lines.append("")
    return "\n".join(lines) + "\n"


def large_file(index: int) -> str:
    """~4,000 lines: many literal experiments plus a hint-key x stage family generated in a loop (names declared)."""
    lines = list(HEADER)
    lines.append(f"HINT_KEYS = {HINT_KEYS!r}")
    lines.append("")
    for j in range(16):
        name = f"bench_large_{index}_{j}"
        lines += _experiment_literal(f"LARGE_{j}", f'"{name}"', index + j, depth=2, width=10)
        lines.append(f'cs.store(group="experiment", package="_global_", name="{name}", node=LARGE_{j})')
        lines.append("")
    # Names built in a loop are declared as a literal list, which the index reads without running the file.
    loop_names = [f"bench_large_{index}_{key}_{stage}" for key in HINT_KEYS for stage in ("pretrain", "posttrain")]
    lines.append(f"EXPERIMENT_NAMES = {loop_names!r}")
    lines.append("")
    lines.append("for key in HINT_KEYS:")
    lines.append('    for stage in ("pretrain", "posttrain"):')
    lines.append(f'        name = f"bench_large_{index}_{{key}}_{{stage}}"')
    body = _experiment_literal("node", "name", index, depth=1, width=6)
    lines += ["        " + line for line in body]
    lines.append('        cs.store(group="experiment", package="_global_", name=name, node=node)')
    return "\n".join(lines) + "\n"


EAGER_CONFIG = '''"""The Cosmos way: make_config() imports every experiment module of the folder."""
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, {repo!r})
from configs.train import make_config as make_default_config

FOLDER = Path({folder!r})


def make_config():
    config = make_default_config()
    for path in sorted(FOLDER.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"eager_experiments.{{path.stem}}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return config
'''


def write_folder(root: Path, num_files: int, num_large: int) -> tuple[Path, Path, str]:
    full = root / "all"
    single = root / "single"
    full.mkdir(parents=True)
    single.mkdir(parents=True)
    for i in range(num_files - num_large):
        (full / f"exp_{i:04d}.py").write_text(regular_file(i))
    for i in range(num_large):
        (full / f"large_{i:02d}.py").write_text(large_file(i))
    target_index = (num_files - num_large) // 2
    target_file = f"exp_{target_index:04d}.py"
    shutil.copy(full / target_file, single / target_file)
    return full, single, f"bench_{target_index:04d}_1"


def time_run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(TRAIN)] + args, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"benchmark run failed ({' '.join(args)}):\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--large", type=int, default=4, help="how many of the files are ~4,000-line files")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="config_startup_"))
    try:
        full, single, name = write_folder(root, args.files, args.large)
        lines = sum(len(p.read_text().splitlines()) for p in full.glob("*.py"))
        largest = max(len(p.read_text().splitlines()) for p in full.glob("*.py"))
        eager_config = root / "eager_config.py"
        eager_config.write_text(EAGER_CONFIG.format(repo=str(REPO_ROOT), folder=str(full)))
        cache = root / "cache"
        base_env = {**os.environ, "OUTPUT_ROOT": str(root / "outputs"), "COSMOS_CACHE_DIR": str(cache)}
        dryrun = ["--dryrun", "--", f"experiment={name}"]

        def env_for(folder: Path) -> dict[str, str]:
            return {**base_env, "COSMOS_EXPERIMENT_PATH": str(folder)}

        def cold(folder: Path) -> float:
            shutil.rmtree(cache, ignore_errors=True)
            return time_run([f"--config={CONFIG}"] + dryrun, env_for(folder))

        def warm(folder: Path) -> float:
            return time_run([f"--config={CONFIG}"] + dryrun, env_for(folder))

        def eager() -> float:
            return time_run([f"--config={eager_config}"] + dryrun, env_for(full))

        # Warm-up: bytecode caches of the library and of the experiment files (eager benefits), index cache.
        eager()
        cold(full)
        times: dict[str, list[float]] = {k: [] for k in ("single-cold", "single-warm", "lazy-cold", "lazy-warm",
                                                         "eager")}
        ratios: dict[str, list[float]] = {k: [] for k in ("cold/single-cold", "warm/single-warm", "eager/warm")}
        for _ in range(args.rounds):
            times["single-cold"].append(cold(single))
            times["single-warm"].append(warm(single))
            times["lazy-cold"].append(cold(full))
            times["lazy-warm"].append(warm(full))
            times["eager"].append(eager())
            ratios["cold/single-cold"].append(times["lazy-cold"][-1] / times["single-cold"][-1])
            ratios["warm/single-warm"].append(times["lazy-warm"][-1] / times["single-warm"][-1])
            ratios["eager/warm"].append(times["eager"][-1] / times["lazy-warm"][-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"Experiment folder: {args.files} files ({args.large} of ~{largest} lines), {lines} lines in all; "
          f"experiment={name}; {args.rounds} rounds, medians; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs\n")
    print("| run | median s | min s |")
    print("| --- | ---: | ---: |")
    for key, values in times.items():
        print(f"| {key} | {statistics.median(values):.3f} | {min(values):.3f} |")
    print()
    targets = {"cold/single-cold": "<= 2", "warm/single-warm": "<= 1.2", "eager/warm": ">= 10"}
    print("| ratio (per round) | median | target |")
    print("| --- | ---: | --- |")
    for key, values in ratios.items():
        print(f"| {key} | {statistics.median(values):.2f} | {targets[key]} |")


if __name__ == "__main__":
    main()
