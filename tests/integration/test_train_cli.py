"""scripts/train.py: --dryrun, --list-experiments, errors, torchrun, and a real (toy) training run."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import yaml
from tests.helpers import REPO_DIR as REPO_ROOT

TRAIN = os.path.join(REPO_ROOT, "scripts", "train.py")
CONFIG = os.path.join(REPO_ROOT, "configs", "train.py")


def _train_module():
    spec = importlib.util.spec_from_file_location("train_script_under_test", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args, cwd, env=None, launcher=None, timeout=120):
    command = (launcher or [sys.executable]) + [TRAIN] + args
    return subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def test_dryrun_prints_and_writes_the_composed_config(tmp_path):
    output_root = tmp_path / "outputs"
    result = _run([f"--config={CONFIG}", "--dryrun", "--", "experiment=example_tiny", "trainer.max_iter=7"],
                  cwd=tmp_path, env={"OUTPUT_ROOT": str(output_root)})  # run from outside the repository
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["trainer"]["max_iter"] == 7
    assert printed["job"]["name"] == "example_tiny"
    written = output_root / "cosmos_transfer" / "examples" / "example_tiny" / "config.yaml"
    assert yaml.safe_load(written.read_text()) == printed


def test_list_experiments_imports_nothing(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "boom.py").write_text("raise RuntimeError('must not be imported')\n"
                                    "from hydra.core.config_store import ConfigStore\n"
                                    "ConfigStore.instance().store(group='experiment', name='user_boom', node={})\n")
    result = _run(["--list-experiments"], cwd=tmp_path, env={"COSMOS_EXPERIMENT_PATH": str(folder)})
    assert result.returncode == 0, result.stderr
    rows = dict(line.split("\t") for line in result.stdout.splitlines())
    assert rows["user_boom"] == str(folder / "boom.py")
    assert rows["example_tiny"] == os.path.join(REPO_ROOT, "experiments", "examples.py")
    assert "must not be imported" not in result.stderr


def test_list_experiments_names_a_file_that_cannot_be_read(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "half.py").write_text("from hydra.core.config_store import ConfigStore\n"
                                    "ConfigStore.instance().store(group='experiment', name='user_half', node={})\n"
                                    "x = (\n")
    result = _run(["--list-experiments"], cwd=tmp_path, env={"COSMOS_EXPERIMENT_PATH": str(folder)})
    assert result.returncode == 0, result.stderr
    assert "user_half\t" in result.stdout  # the names before the error are listed
    assert f"warning: experiment file cannot be read: {folder / 'half.py'} line 3: SyntaxError" in result.stderr


def test_bad_override_is_one_paragraph_without_traceback(tmp_path):
    result = _run([f"--config={CONFIG}", "--dryrun", "--", "trainer.max_itr=5"], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Did you mean: trainer.max_iter" in lines[0]


def test_torchrun_dryrun_prints_once(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = _run([f"--config={CONFIG}", "--dryrun", "--", "experiment=example_tiny", "trainer.max_iter=7"],
                  cwd=tmp_path, env={"OUTPUT_ROOT": str(tmp_path / "out")}, launcher=torchrun)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("max_iter: 7") == 1


@pytest.mark.parametrize(
    "config_text, expected",
    [
        (None, "does not exist"),
        ("def make_config(:\n    pass\n", r"failed to import \(line 1\): SyntaxError"),
        ("x = 1\nraise ValueError('bad value')\n", r"failed to import \(line 2\): ValueError: bad value"),
        ("x = 1\n", "defines no make_config"),
    ],
)
def test_bad_config_files(tmp_path, capsys, config_text, expected):
    path = tmp_path / "my_config.py"
    if config_text is not None:
        path.write_text(config_text)
    assert _train_module().run([f"--config={path}", "--dryrun"]) == 2
    err = capsys.readouterr().err
    assert "my_config.py" in err
    assert __import__("re").search(expected, err), err


def test_unknown_experiment_and_broken_experiment_file(tmp_path, capsys, monkeypatch):
    module = _train_module()
    assert module.run([f"--config={CONFIG}", "--dryrun", "--", "experiment=example_tiyn"]) == 2
    assert "Did you mean: example_tiny" in capsys.readouterr().err
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "broken.py").write_text("from hydra.core.config_store import ConfigStore\n"
                                      "ConfigStore.instance().store(group='experiment', name='user_broken', node={})\n"
                                      "a = 1\nb = (\n")
    monkeypatch.setenv("COSMOS_EXPERIMENT_PATH", str(folder))
    assert module.run([f"--config={CONFIG}", "--dryrun", "--", "experiment=user_broken"]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'broken.py'} for experiment 'user_broken' failed (line 4): SyntaxError" in err


def test_training_run_freezes_writes_config_and_calls_the_trainer(tmp_path, monkeypatch):
    import cosmos_transfer.trainer.trainer as trainer_module

    seen = {}
    monkeypatch.setattr(trainer_module, "train", lambda config: seen.setdefault("config", config))
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path))
    # --skip-checks: the demo data need not exist here (the checks themselves: tests/integration/test_preflight.py)
    assert _train_module().run([f"--config={CONFIG}", "--skip-checks", "--", "experiment=example_tiny",
                                "job.name=called"]) == 0
    config = seen["config"]
    assert config.job.name == "called" and getattr(config, "_frozen", False)
    assert os.path.isfile(os.path.join(config.job.path, "config.yaml"))


TOY_CONFIG = """
import sys
sys.path.insert(0, {tests!r})
from cosmos_transfer.config.lazy import LazyCall as L
from cosmos_transfer.config.schema import Config


def make_config():
    config = Config(
        model=L("trainer_toy.ToyDiffusionModel")(),
        optimizer=L("torch.optim.AdamW")(lr=3e-3),
        scheduler=L("cosmos_transfer.trainer.schedulers.constant")(),
        dataloader_train=L("cosmos_transfer.data.sampler.build_dataloader")(
            dataset=L("trainer_toy.ToyVideoDataset")(length=16), batch_size=4),
        defaults=["_self_"],
    )
    config.job.group = "cli"
    config.trainer.progress_bar = False
    return config
"""


def test_end_to_end_toy_training_through_the_cli(tmp_path):
    config_file = tmp_path / "toy_config.py"
    config_file.write_text(textwrap.dedent(TOY_CONFIG.format(tests=os.path.join(REPO_ROOT, "tests"))))
    result = _run([f"--config={config_file}", "--", "trainer.max_iter=3", "checkpoint.save_iter=3", "job.name=toy"],
                  cwd=tmp_path, env={"OUTPUT_ROOT": str(tmp_path / "out")}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    job_dir = tmp_path / "out" / "cosmos_transfer" / "cli" / "toy"
    assert yaml.safe_load((job_dir / "config.yaml").read_text())["trainer"]["max_iter"] == 3
    assert (job_dir / "checkpoints" / "iter_000000003").is_dir()


def test_a_damaged_load_path_file_is_one_message_without_traceback(tmp_path):
    # An interrupted download of the weights named by checkpoint.load_path: the loader's message (file, what is
    # wrong, download again), exit 2, and no Python traceback around it.
    config_file = tmp_path / "toy_config.py"
    config_file.write_text(textwrap.dedent(TOY_CONFIG.format(tests=os.path.join(REPO_ROOT, "tests"))))
    weights = tmp_path / "base_model.pt"
    weights.write_bytes(b"PK\x03\x04" + os.urandom(2000))
    result = _run([f"--config={config_file}", "--", "trainer.max_iter=1", "job.name=damaged",
                   f"checkpoint.load_path={weights}"],
                  cwd=tmp_path, env={"OUTPUT_ROOT": str(tmp_path / "out")}, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert str(weights) in result.stderr and "again" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("checks", [True, False])
def test_context_parallel_that_cannot_split_is_one_paragraph_before_building(tmp_path, checks):
    """trainer.context_parallel_size=2 on one process: the preflight lists it with the clip lengths that split; past
    the checks (--skip-checks) the trainer's own refusal is one paragraph too, exit 2, no traceback."""
    args = [f"--config={CONFIG}", *([] if checks else ["--skip-checks"]), "--", "experiment=transfer2p5_tiny",
            "trainer.context_parallel_size=2"]
    result = _run(args, cwd=tmp_path, env={"OUTPUT_ROOT": str(tmp_path / "out")})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "trainer.context_parallel_size=2" in result.stderr and "number of ranks (1)" in result.stderr
    if checks:
        assert "problem(s) found before building anything" in result.stderr
        assert "lengths that split: 5, 13, 21, 29 frames" in result.stderr


def test_a_lora_setting_the_model_cannot_take_is_one_paragraph(tmp_path):
    args = [f"--config={CONFIG}", "--skip-checks", "--", "experiment=ctrl_tiny", "lora=base", "lora.rank=0"]
    result = _run(args, cwd=tmp_path, env={"OUTPUT_ROOT": str(tmp_path / "out")})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "train: error: lora.rank must be a positive integer, got 0" in result.stderr


def test_a_component_left_unset_is_one_paragraph(tmp_path):
    args = [f"--config={CONFIG}", "--skip-checks", "--", "experiment=ctrl_tiny", "dataloader_train=null"]
    result = _run(args, cwd=tmp_path, env={"OUTPUT_ROOT": str(tmp_path / "out")})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "train: error: config.dataloader_train is not set: choose a `data_train` option" in result.stderr
