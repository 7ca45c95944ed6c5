"""The lazy experiment index: reading names without importing, user folders, cache, duplicates, errors."""

import os
import sys
import textwrap

import pytest

from configs.train import make_config
from cosmos_transfer.config import experiments
from cosmos_transfer.config.compose import override
from cosmos_transfer.config.errors import ExperimentError
from cosmos_transfer.config.experiments import build_index, load_experiment, read_experiment_file

STORE = 'from hydra.core.config_store import ConfigStore\ncs = ConfigStore.instance()\n'


def _names(source: str) -> list[str]:
    entry = read_experiment_file(source)
    assert entry["error"] is None, entry
    return sorted(name for name, _ in entry["names"])


def _write(folder, name, text):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    folder = tmp_path / "my_experiments"
    folder.mkdir()
    monkeypatch.setenv("COSMOS_EXPERIMENT_PATH", str(folder))
    monkeypatch.setenv("COSMOS_CACHE_DIR", str(tmp_path / "cache"))
    return folder


def _experiment(name, max_iter, extra=""):
    return STORE + textwrap.dedent(f"""
        {extra}
        cs.store(group="experiment", package="_global_", name="{name}",
                 node=dict(defaults=[{{"override /scheduler": "constant"}}, "_self_"], trainer=dict(max_iter={max_iter})))
        """)


def test_reads_literal_cosmos_style_names():
    assert _names(STORE + 'cs.store(group="experiment", package="_global_", name="a", node={})\n'
                  'cs.store(group="net", name="not_an_experiment", node={})\n'
                  'ConfigStore.instance().store("b", {}, group="experiment")\n') == ["a", "b"]


def test_loop_generated_names_are_declared_and_computed_names_are_reported():
    loop = textwrap.dedent("""
    HINT_KEYS = ["edge", "vis"]
    for key in HINT_KEYS:
        cs.store(group="experiment", package="_global_", name=f"ctrl_7b_{key}_posttrain", node={})
    """)
    entry = read_experiment_file(STORE + loop)
    assert entry["names"] == [] and entry["unresolved"] == [6]  # the call is found, its name is not guessed
    declared = STORE + 'EXPERIMENT_NAMES = ["ctrl_7b_edge_posttrain", "ctrl_7b_vis_posttrain"]\n' + loop
    entry = read_experiment_file(declared)
    assert sorted(n for n, _ in entry["names"]) == ["ctrl_7b_edge_posttrain", "ctrl_7b_vis_posttrain"]
    assert entry["unresolved"] == [] and entry["error"] is None  # the declaration covers the loop


def test_bad_declaration_and_syntax_error_are_reported_with_lines():
    entry = read_experiment_file("x = 1\nEXPERIMENT_NAMES = names_from_a_function()\n")
    assert entry["error"]["line"] == 2 and "EXPERIMENT_NAMES" in entry["error"]["message"]
    entry = read_experiment_file("KEYS = ['a']\nEXPERIMENT_NAMES = [f'x_{k}' for k in KEYS]\n")  # not a literal
    assert entry["error"]["line"] == 2 and "literal list" in entry["error"]["message"]
    entry = read_experiment_file("x = 1\ncs.store(group='experiment', name='a'\n")
    assert entry["error"]["line"] >= 2 and entry["error"]["message"].startswith("SyntaxError")


def test_a_syntax_error_keeps_the_names_before_it():
    source = (STORE + "cs.store(group='experiment', name='before', node={})\nx = (\n"
              "cs.store(group='experiment', name='after', node={})\n")
    entry = read_experiment_file(source)
    assert [name for name, _ in entry["names"]] == ["before"]
    assert entry["error"] == {"line": 4, "message": "SyntaxError: '(' was never closed"}


def test_repository_experiment_files_declare_exactly_what_they_register():
    """Every name the index reads from experiments/*.py is registered on import, and nothing else is."""
    from hydra.core.config_store import ConfigStore

    index = build_index(use_cache=False)
    by_file: dict = {}
    for name, (path, _) in index.locations.items():
        by_file.setdefault(path, set()).add(name)
    repo_files = {p: n for p, n in by_file.items() if os.sep + "experiments" + os.sep in p}
    assert len(repo_files) >= 3
    for path, names in repo_files.items():
        store = ConfigStore.instance().repo.setdefault("experiment", {})
        saved = dict(store)
        store.clear()
        try:
            load_experiment(sorted(names)[0])
            registered = {key[: -len(".yaml")] for key in store}
        finally:
            store.clear()
            store.update(saved)
        assert registered == names, path


def test_user_folder_and_only_the_requested_file_is_imported(user_folder):
    _write(user_folder, "good.py", _experiment("user_good", 11))
    _write(user_folder, "boom.py", _experiment("user_boom", 12, extra="raise RuntimeError('imported boom')"))
    _write(user_folder, "_helper.py", "raise RuntimeError('helpers are never scanned or imported')\n")
    index = build_index()
    assert {"user_good", "user_boom", "example_tiny"} <= set(index.names())
    config = override(make_config(), ["experiment=user_good"])
    assert config.trainer.max_iter == 11
    assert config.scheduler._target_.endswith(".constant")
    assert not any("boom" in name for name in sys.modules)
    with pytest.raises(ExperimentError, match=r"boom\.py for experiment 'user_boom' failed \(line 4\): "
                                              r"RuntimeError: imported boom"):
        override(make_config(), ["experiment=user_boom"])


def test_run_without_experiment_builds_no_index(user_folder, monkeypatch):
    _write(user_folder, "broken.py", "this is not python(\n")

    def fail(*args, **kwargs):
        raise AssertionError("the index must not be built without experiment=")

    monkeypatch.setattr(experiments, "build_index", fail)
    assert override(make_config(), ["trainer.max_iter=2"]).trainer.max_iter == 2


def test_cache_is_used_and_invalidated_on_edit(user_folder, monkeypatch):
    path = _write(user_folder, "mine.py", _experiment("cached_v1", 1))
    reads = []
    original = experiments.read_experiment_file
    monkeypatch.setattr(experiments, "read_experiment_file",
                        lambda source, path="": reads.append(source) or original(source, path))
    assert "cached_v1" in build_index().names()
    assert any("cached_v1" in source for source in reads)
    reads.clear()
    assert "cached_v1" in build_index().names()
    assert reads == []  # nothing changed: nothing re-read
    path.write_text(_experiment("cached_v2", 2))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    names = build_index().names()
    assert "cached_v2" in names and "cached_v1" not in names
    assert len(reads) == 1 and "cached_v2" in reads[0]
    assert override(make_config(), ["experiment=cached_v2"]).trainer.max_iter == 2


def test_duplicate_names_name_both_files(user_folder):
    first = _write(user_folder, "one.py", _experiment("same_name", 1))
    (user_folder / "sub").mkdir()
    second = _write(user_folder / "sub", "two.py", _experiment("same_name", 2))
    with pytest.raises(ExperimentError, match="Duplicate experiment names") as info:
        build_index()
    assert str(first) in str(info.value) and str(second) in str(info.value)


def test_a_run_parses_only_the_files_that_can_define_its_experiment(user_folder, monkeypatch):
    for i in range(5):
        _write(user_folder, f"other_{i}.py", _experiment(f"other_{i}", i + 1))
    _write(user_folder, "wanted.py", _experiment("wanted_run", 9))
    parsed = []
    original = experiments.read_experiment_file
    monkeypatch.setattr(experiments, "read_experiment_file",
                        lambda source, path="": parsed.append(os.path.basename(path)) or original(source, path))
    assert override(make_config(), ["experiment=wanted_run"]).trainer.max_iter == 9
    assert parsed == ["wanted.py"]  # cold cache: the five other files are not parsed
    # A second file defining the same name holds its text too: the duplicate is still found, naming both files.
    second = _write(user_folder, "again.py", _experiment("wanted_run", 3))
    with pytest.raises(ExperimentError, match="Duplicate experiment names") as info:
        override(make_config(), ["experiment=wanted_run"])
    assert str(second) in str(info.value) and str(user_folder / "wanted.py") in str(info.value)


def test_a_name_written_with_escapes_is_still_found(user_folder):
    _write(user_folder, "escaped.py", STORE + "EXPERIMENT_NAMES = ['esc\\x61ped']\n"
                                             "cs.store(group='experiment', name='esc' + 'aped', node={})\n")
    assert load_experiment("escaped").name == "escaped.py"  # cold cache: the file's text does not hold the name
    assert "escaped" in build_index().names()


def test_syntax_error_names_file_and_line(user_folder):
    path = _write(user_folder, "typo.py", STORE + "cs.store(group='experiment', name='x', node={}\nx = (\n")
    # The broken file does not block experiments of other files ...
    assert override(make_config(), ["experiment=example_tiny"]).trainer.max_iter == 20
    # ... and is named with its line when the name asked for is found nowhere (it may be in the broken file).
    with pytest.raises(ExperimentError, match="cannot be read") as info:
        override(make_config(), ["experiment=x"])
    assert f"{path} line 3: SyntaxError" in str(info.value)


def test_syntax_error_outside_store_calls_is_reported_on_import_only(user_folder):
    path = _write(user_folder, "half_edited.py", _experiment("half_edited", 1) + "x = (\n")
    _write(user_folder, "fine.py", _experiment("fine", 5))
    assert override(make_config(), ["experiment=fine"]).trainer.max_iter == 5  # an unrelated file does not block
    with pytest.raises(ExperimentError, match=f"{path} for experiment 'half_edited' failed \\(line 7\\): SyntaxError: '\\(' was never closed"):
        override(make_config(), ["experiment=half_edited"])


def test_unknown_experiment_suggests_and_says_where(user_folder):
    with pytest.raises(ExperimentError) as info:
        override(make_config(), ["experiment=exmaple_tiny"])
    message = str(info.value)
    assert "Unknown experiment 'exmaple_tiny'" in message and "Did you mean: example_tiny" in message
    assert str(user_folder) in message and "COSMOS_EXPERIMENT_PATH" in message


def test_declared_but_not_registered(user_folder):
    _write(user_folder, "liar.py", "EXPERIMENT_NAMES = ['never_registered']\n")
    with pytest.raises(ExperimentError, match="was expected to register experiment 'never_registered'"):
        load_experiment("never_registered")


def test_experiment_path_must_be_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("COSMOS_EXPERIMENT_PATH", str(tmp_path / "missing"))
    with pytest.raises(ExperimentError, match="COSMOS_EXPERIMENT_PATH names .*missing.*which is not a folder"):
        build_index()


def test_user_experiment_can_import_its_helpers(user_folder):
    _write(user_folder, "_shared_settings.py", "MAX_ITER = 13\n")
    _write(user_folder, "uses_helper.py", _experiment("uses_helper", "MAX_ITER", extra="from _shared_settings import "
                                                                                       "MAX_ITER"))
    assert override(make_config(), ["experiment=uses_helper"]).trainer.max_iter == 13
