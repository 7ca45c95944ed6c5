"""`make demo` under OUTPUT_ROOT (README documents it): the Makefile learns where the job writes from the config's
job.path (scripts/demo_report.py --print), and the report's job folder is that same path, so its last step finds what
training wrote. Before, the Makefile handed demo_report.py the fixed outputs/... path and the converted base went to
./outputs whatever OUTPUT_ROOT said."""

import os
import subprocess
import sys

from tests.helpers import ROOT


def _make_n(*variables: str) -> str:
    result = subprocess.run(["make", "-n", "demo", f"PY={sys.executable}", *variables], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_demo_takes_its_paths_from_the_config(tmp_path):
    commands = _make_n(f"OUTPUT_ROOT={tmp_path}", "DEMO_OVERRIDES=job.name=second")
    assert "outputs/" not in commands  # no path of its own: every one comes from demo_report.py --print
    assert "scripts/demo_report.py --print init -- job.name=second" in commands
    assert 'checkpoint.load_path="$init" job.name=second' in commands
    report = [line for line in commands.splitlines() if "demo_report.py --data" in line]
    assert report == [f"{sys.executable} scripts/demo_report.py --data datasets/demo/val -- job.name=second"]


def test_demo_report_prints_the_paths_under_output_root(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import demo_report

    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "out"))

    def printed(what: str, *overrides: str) -> str:
        assert demo_report.main(["--print", what, "--", *overrides]) == 0
        return capsys.readouterr().out.strip()

    folder = os.path.join(str(tmp_path / "out"), "cosmos_transfer", "demo")
    assert printed("job") == os.path.join(folder, "demo_edge_tiny")
    assert printed("job", "job.name=second") == os.path.join(folder, "second")
    assert printed("init", "job.name=second") == os.path.join(folder, "demo_edge_init.safetensors")
    assert printed("folder") == folder
