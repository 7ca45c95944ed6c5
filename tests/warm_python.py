"""`python <script> <args>` without paying for `import torch` each time: the one-process runs of the tests.

On the 2-core test machine a one-process toy run (tests/trainer_toy_run.py) takes ~9 s, of which ~6 s is importing
torch, its distributed checkpointing, FSDP's dynamo and the trainer; the run itself is well under a second. This
server imports those once; each run is then a fork of it that executes the script as `python script args` would: a
process of its own (its own environment, working folder, stdout/stderr, exit status, signal handlers, atexit, threads
joined at exit), with its own fault injections, killed on timeout. Only what the interpreter reads at start-up is the
server's, so a run whose environment differs there (OMP_NUM_THREADS, PYTHONWARNINGS, ...) starts cold instead.

Used by tests.helpers.run_python (and run_toy with one process). Runs under torchrun start their workers as usual.
Not for a test that measures a run's memory or start-up time: a fork shares the server's imported modules.

    python tests/warm_python.py      # requests on stdin, one JSON line each; replies on stdout
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import sys

# Read by the interpreter or by OpenMP when the process starts: a run that needs other values cannot be a fork.
STARTUP_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONWARNINGS", "PYTHONPATH", "PYTHONHASHSEED",
                     "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "LD_PRELOAD", "LD_LIBRARY_PATH")

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def preload() -> None:
    """What the toy trainer and the checkpoint scripts import (and what FSDP and the logger import on first use)."""
    sys.path[:0] = [TESTS, ROOT]
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (fully_shard imports it when it shards the first parameter)
    import torch.distributed.checkpoint  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401

    import cosmos_transfer.trainer.trainer  # noqa: F401
    import trainer_toy_run  # noqa: F401
    del sys.path[:2]


def run_request(request: dict) -> None:
    """In the forked child: become `python <argv>` (or `python -c <code> <args>`) and never return to the loop.

    An uncaught exception leaves through the top of this file, so Python prints its traceback and exits 1, as it
    does for a script."""
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_TRUNC)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = request["argv"]
    if argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        sys.path[0] = ""
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    else:
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")
    sys.exit(0)


def serve() -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # nothing but the replies goes to the test
    preload()
    replies.write(json.dumps({"ready": {k: os.environ.get(k) for k in STARTUP_VARIABLES}}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush(), sys.stderr.flush()
        # What the server imported is never garbage: kept out of the collector, the child's exit takes 0.3 s, not 1.3.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            replies.close()
            run_request(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    serve()
