"""The one error boundary of every script (cosmos_transfer/cli.py `run_script`): a user error is one paragraph on
stderr, once (rank 0), with its exit status; an OSError naming a file likewise (a full disk named as such); anything
else is a bug and keeps its traceback."""

import errno
import subprocess
import sys

import pytest

from cosmos_transfer.cli import run_script, user_error_message
from cosmos_transfer.config.errors import ConfigError, DataError, UserError
from cosmos_transfer.trainer.job_lock import JobLockedError
from tests.helpers import ROOT


def test_a_user_error_is_one_paragraph_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)

    def main():
        raise DataError("bucket list 'x': expected a list of [frames, height, width]")

    assert run_script("train", main) == 2
    err = capsys.readouterr().err
    assert err == "train: error: bucket list 'x': expected a list of [frames, height, width]\n"


def test_only_rank_0_prints(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")

    def main():
        raise ConfigError("bad key")

    assert run_script("train", main) == 2
    assert capsys.readouterr().err == ""


def test_the_job_lock_keeps_its_own_exit_status(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)

    def main():
        raise JobLockedError("job folder /x is held by pid 1")

    assert run_script("train", main) == 3
    assert "held by pid 1" in capsys.readouterr().err


def test_a_full_disk_is_named_as_such():
    error = OSError(errno.ENOSPC, "No space left on device", "/ckpt/iter_000010/__0_0.distcp")
    message = user_error_message(error)
    assert message.startswith("the disk is full: writing '/ckpt/iter_000010/__0_0.distcp' failed")


def test_an_os_error_without_a_file_and_a_bug_keep_their_traceback():
    assert user_error_message(OSError("socket closed")) is None
    assert user_error_message(KeyError("net.x")) is None
    assert isinstance(DataError("x"), ValueError) and isinstance(DataError("x"), UserError)

    def main():
        raise KeyError("net.x")

    with pytest.raises(KeyError):
        run_script("train", main)


def test_a_script_prints_no_traceback_for_a_user_error():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--dryrun", "--",
                             "experiment=no_such_experiment"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("train: error: Unknown experiment 'no_such_experiment'")
