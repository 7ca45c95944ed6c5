"""tests.helpers.run_python (a fork of tests/warm_python.py's server) gives what `subprocess.run([python, ...])` gives:
the same exit status, output, traceback, arguments, working folder and environment, and a killed run on timeout."""

import os
import subprocess
import sys

import pytest
from tests.helpers import run_python, subprocess_env

SCRIPT = """
import atexit, os, sys, threading, time
print("argv", sys.argv[1:], "cwd", os.getcwd(), "marker", os.environ.get("WARM_TEST_MARKER"))
print("to stderr", file=sys.stderr)
threading.Thread(target=lambda: (time.sleep(0.2), print("thread joined"))).start()  # waited for at exit
atexit.register(lambda: print("atexit ran"))
if sys.argv[1] == "raise":
    raise ValueError("the error of the script")
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("how", ["0", "3", "raise"])
def test_a_warm_run_is_what_a_cold_one_is(tmp_path, how):
    env = {**subprocess_env(), "WARM_TEST_MARKER": str(tmp_path)}
    cold = subprocess.run([sys.executable, "-c", SCRIPT, how], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=60)
    warm = run_python(["-c", SCRIPT, how], env=env, cwd=tmp_path, timeout=60)
    assert warm.returncode == cold.returncode == {"0": 0, "3": 3, "raise": 1}[how]
    assert warm.stdout == cold.stdout and f"marker {tmp_path}" in warm.stdout and "atexit ran" in warm.stdout
    assert "thread joined" in warm.stdout
    assert cold.stderr.splitlines()[-1] == warm.stderr.splitlines()[-1]  # the traceback's last line, or "to stderr"
    assert os.environ.get("WARM_TEST_MARKER") is None  # nothing leaks back into this process


def test_a_warm_run_is_killed_on_timeout_and_the_next_one_runs():
    with pytest.raises(subprocess.TimeoutExpired):
        run_python(["-c", "import time; print('started', flush=True); time.sleep(60)"], timeout=1)
    assert run_python(["-c", "print('next')"]).stdout == "next\n"


def test_a_run_whose_start_up_environment_differs_starts_cold():
    env = {**subprocess_env(), "PYTHONWARNINGS": "error"}
    result = run_python(["-c", "import sys; print(sys.warnoptions)"], env=env)
    assert result.stdout.strip() == "['error']"  # read at start-up: only a fresh interpreter can have it
