"""Train (or just compose) a config.

    torchrun --nproc_per_node=8 scripts/train.py --config=configs/train.py -- experiment=NAME optimizer.lr=5e-5
    python scripts/train.py --config=configs/train.py --dryrun -- experiment=NAME trainer.max_iter=7
    python scripts/train.py --list-experiments

--config      a Python file defining make_config() -> Config (default: configs/train.py)
--dryrun      compose, print the resolved config as YAML, write <job dir>/config.yaml, exit without building anything
--list-experiments   one `name<TAB>file` line per experiment (no experiment file is imported)
--skip-checks one run without the checks made before building (cosmos_transfer/preflight.py: the files and folders
              the run needs, the model's memory against the device and host, the world size)
after `--`    Hydra overrides: `experiment=NAME`, group choices (`optimizer=adamw`), values (`trainer.max_iter=7`)

Bad input ends with a one-paragraph message and exit status 2 (3: another run holds the job folder); set
COSMOS_TRACEBACK=1 to see the traceback too.
Works the same under plain python and torchrun; only rank 0 prints and writes files.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # so `configs.*` and `experiments.*` import when run from anywhere

from cosmos_transfer.config.compose import freeze, load_make_config, override, to_yaml  # noqa: E402
from cosmos_transfer.cli import run_script  # noqa: E402
from cosmos_transfer.config.errors import ConfigError  # noqa: E402
from cosmos_transfer.trainer.job_lock import hold_job_lock  # noqa: E402


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options before `--`, Hydra overrides after it (overrides before `--` are accepted too)."""
    if "--" in argv:
        split = argv.index("--")
        own, overrides = argv[:split], argv[split + 1:]
    else:
        own, overrides = argv, []
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "train.py"),
                        help="Python file defining make_config() (default: configs/train.py)")
    parser.add_argument("--dryrun", action="store_true", help="compose and print the config, build nothing")
    parser.add_argument("--list-experiments", action="store_true", help="print name<TAB>file of every experiment")
    parser.add_argument("--skip-checks", action="store_true",
                        help="skip the checks of paths, memory and world size made before building anything")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (usually given after --)")
    args = parser.parse_args(own)
    return args, list(args.overrides) + overrides


def rank() -> int:
    """Global rank from the torchrun environment (no process group exists yet when composing)."""
    return int(os.environ.get("RANK", "0"))


def write_config_yaml(config: Any, text: Optional[str] = None) -> str:
    path = os.path.join(config.job.path, "config.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text if text is not None else to_yaml(config))
    return path


def preflight(config: Any) -> None:
    """Every problem found before building anything (missing files, a model too big for the machine, a world size
    that does not fit), in one PreflightError; see cosmos_transfer/preflight.py."""
    import torch

    from cosmos_transfer.preflight import PreflightError, check_run

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    problems = check_run(config, world_size=world_size,
                         local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))),
                         device_type="cuda" if torch.cuda.is_available() else "cpu")
    if problems:
        raise PreflightError(problems)


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    if args.list_experiments:
        from cosmos_transfer.config.experiments import build_index

        if rank() == 0:
            index = build_index()
            try:
                for name in index.names():
                    print(f"{name}\t{index.locations[name][0]}")
                sys.stdout.flush()
            except BrokenPipeError:  # e.g. piped into `head`
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            for problem in index.unreadable:  # names after a syntax error are missing from the list: say why
                print(f"warning: experiment file cannot be read: {problem}", file=sys.stderr)
        return 0

    make_config = load_make_config(args.config)
    try:
        config = make_config()
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"make_config() in '{args.config}' failed: {type(error).__name__}: {error}") from error
    config = override(config, overrides)
    text = to_yaml(config)

    if args.dryrun:
        if rank() == 0:
            print(text, end="")
            hold_job_lock(config.job.path)  # a running job's config.yaml is not overwritten
            path = write_config_yaml(config, text)
            print(f"# written to {path}", file=sys.stderr)
        return 0

    freeze(config)
    if rank() == 0:
        try:
            hold_job_lock(config.job.path)  # one run per job folder: before anything is written into it
        except OSError as error:  # e.g. a job.lock that is a link or a folder: named by the lock's own message
            raise ConfigError(str(error)) from None
    if not args.skip_checks:
        preflight(config)
    if rank() == 0:
        write_config_yaml(config, text)
    from cosmos_transfer.trainer.trainer import train  # imported only now: composing needs no torch

    train(config)
    return 0


def run(argv: list[str]) -> int:
    """main() with bad input turned into a one-paragraph message and its exit status (cosmos_transfer/cli.py)."""
    return run_script("train", lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
