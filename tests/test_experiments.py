"""The lazy experiment index: reading names without importing, user folders, cache, duplicates, errors."""

import os
import sys
import textwrap

import pytest

from configs.train import make_config
from cosmos_transfer import experiments
from cosmos_transfer.config import override
from cosmos_transfer.experiments import ExperimentError, build_index, load_experiment, scan_source

STORE = 'from hydra.core.config_store import ConfigStore\ncs = ConfigStore.instance()\n'


def _names(source: str) -> list[str]:
    entry = scan_source(source)
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


def test_reads_loop_generated_names():
    source = STORE + textwrap.dedent("""
    HINT_KEYS = ["edge", "vis", "depth", "seg", "keypoint", "upscale"]
    STAGES = {"pretrain": object(), "posttrain": object()}   # values need not be literals
    for key in HINT_KEYS:
        for stage, node in STAGES.items():
            cs.store(group="experiment", package="_global_", name=f"ctrl_7b_{key}_{stage}", node=node)
    for i, size in enumerate(["2b", "7b"]):
        cs.store(group="experiment", name="model_%s_v%d" % (size, i) + "_" + "X".lower(), node={})
    """)
    names = _names(source)
    assert len(names) == 14
    assert "ctrl_7b_upscale_posttrain" in names and "model_7b_v1_x" in names


def test_declared_names_and_unresolved_calls():
    entry = scan_source(STORE + textwrap.dedent("""
    SIZES = ["2b", "7b"]
    EXPERIMENT_NAMES = [f"computed_{size}_{k}" for size in SIZES for k in range(2) if k != 1]

    def register(name):
        cs.store(group="experiment", name=name, node={})

    for name in compute_names_somehow():
        register(name)
    """))
    assert sorted(n for n, _ in entry["names"]) == ["computed_2b_0", "computed_7b_0"]
    assert entry["unresolved"] == [8]  # the store inside register(): its name is a parameter


def test_bad_declaration_and_syntax_error_are_reported_with_lines():
    entry = scan_source("x = 1\nEXPERIMENT_NAMES = names_from_a_function()\n")
    assert entry["error"]["line"] == 2 and "EXPERIMENT_NAMES" in entry["error"]["message"]
    entry = scan_source("x = 1\ncs.store(group='experiment', name='a'\n")
    assert entry["error"]["line"] >= 2


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
    original = experiments.fast_scan
    monkeypatch.setattr(experiments, "fast_scan", lambda source: reads.append(source) or original(source))
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


def test_syntax_error_names_file_and_line(user_folder):
    path = _write(user_folder, "typo.py", STORE + "cs.store(group='experiment', name='x', node={}\nx = (\n")
    with pytest.raises(ExperimentError, match="syntax error") as info:
        override(make_config(), ["experiment=example_tiny"])
    assert f"{path} line" in str(info.value)


def test_syntax_error_outside_store_calls_is_reported_on_import_only(user_folder):
    path = _write(user_folder, "half_edited.py", _experiment("half_edited", 1) + "x = (\n")
    _write(user_folder, "fine.py", _experiment("fine", 5))
    assert override(make_config(), ["experiment=fine"]).trainer.max_iter == 5  # an unrelated file does not block
    with pytest.raises(ExperimentError, match=f"{path} for experiment 'half_edited' failed \\(line 7\\): SyntaxError: '\\(' was never closed"):
        override(make_config(), ["experiment=half_edited"])


FAST_CASES = {
    "literal": STORE + 'cs.store(group="experiment", package="_global_", name="lit", node={})\n',
    "multiline": STORE + 'cs.store(\n    group="experiment",\n    name="multi",  # comment (\n    node=dict(a=")"),\n)\n',
    "comment_docstring": '"""Example:\n    cs.store(group="experiment", name="in_docstring", node={})\n"""\n'
                         + STORE + '# cs.store(group="experiment", name="in_comment", node={})\n'
                         + 'def restore(x): pass\ncs.store(group="net", name="a_net", node={})\n'
                         + 'cs.store(group="experiment", name="real", node={})\n',
}


@pytest.mark.parametrize("case", sorted(FAST_CASES))
def test_fast_reading_agrees_with_the_full_reading(case):
    source = FAST_CASES[case]
    fast = experiments.fast_scan(source)
    assert fast is not None
    assert sorted(fast["names"]) == sorted(scan_source(source)["names"])


def test_fast_reading_defers_to_the_full_reading_when_needed():
    loop = STORE + 'for k in ["a", "b"]:\n    cs.store(group="experiment", name=f"x_{k}", node={})\n'
    assert experiments.fast_scan(loop) is None
    assert experiments.fast_scan("EXPERIMENT_NAMES = ['a']\n") is None
    assert experiments.fast_scan(STORE + "cs.store(group='experiment', name='x', node={}\n") is None


def test_reduced_reading_skips_big_literals_but_keeps_names_and_lines():
    big = "BIG = LazyDict(dict(\n" + "".join(f"    key_{i}=dict(a={i}, b=[1, 2, 3]),\n" for i in range(200)) + "))\n"
    source = STORE + "KEYS = ['edge', 'vis']\n" + big + textwrap.dedent("""
    for key in KEYS:
        cs.store(group="experiment", name=f"reduced_{key}", node=BIG)
    """)
    reduced = experiments.reduced_scan(source)
    assert reduced is not None
    assert sorted(reduced["names"]) == sorted(scan_source(source)["names"])
    assert [name for name, _ in reduced["names"]] == ["reduced_edge", "reduced_vis"]
    # A name that depends on a long literal is not guessed: the reduced reading gives up.
    long_names = "NAMES = [" + ", ".join(f"'name_{i:04d}_with_some_length'" for i in range(100)) + "]\n"
    source = STORE + long_names + "for n in NAMES:\n    cs.store(group='experiment', name=n, node={})\n"
    assert experiments.reduced_scan(source) is None
    assert len(scan_source(source)["names"]) == 100


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
