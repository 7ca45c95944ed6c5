"""Outputs of the convert and export scripts (issue 25): no output may be an input of the same command (also through
a hard or symbolic link), a file the checkpoint references (a lean checkpoint's frozen base), the other output or an
existing folder; each is refused before anything is read, naming both paths, exit 2. Files are written whole under a
temporary name, with a plain open()'s mode. Also: the converter's family-correct messages and its control-block
counts, `--lora separate` naming both files, and `to-official` of a job that trained its base."""

import json
import os
import stat
import sys

import pytest
import torch

from cosmos_transfer.checkpoints import files
from tests.helpers import REPO_DIR, run_python

sys.path.insert(0, os.path.join(REPO_DIR, "scripts"))
import convert_checkpoint  # noqa: E402
import export_checkpoint  # noqa: E402

DEMO_BASE = os.path.join(REPO_DIR, "assets", "demo", "base_model.pt")  # NVIDIA's base_model.pt layout, 2 blocks


def _plain_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base_model.pt"
    path.write_bytes(open(DEMO_BASE, "rb").read())
    return path


# ------------------------------------------------------------------------------------------- convert_checkpoint
def test_converting_a_file_onto_itself_is_refused_and_leaves_it_whole(base, tmp_path):
    """It used to die of SIGBUS (the input is memory-mapped while torch.save truncates it), leaving it truncated."""
    original = base.read_bytes()
    os.link(base, tmp_path / "hard_link.pt")
    os.symlink(base, tmp_path / "symlink.pt")
    for output in (str(base), f"{tmp_path}/./base_model.pt", str(tmp_path / "hard_link.pt"),
                   str(tmp_path / "symlink.pt")):
        result = run_python([os.path.join(REPO_DIR, "scripts", "convert_checkpoint.py"), "to-ours", str(base), output],
                            timeout=120)
        assert result.returncode == 2, (output, result.returncode, result.stderr[-1500:])
        assert "Traceback" not in result.stderr
        assert f"OUTPUT '{output}' is SOURCE '{base}' (the same file)" in result.stderr
        assert base.read_bytes() == original


def test_output_folders_and_inputs_are_checked(base, tmp_path, capsys):
    (tmp_path / "folder.safetensors").mkdir()
    assert convert_checkpoint.main(["to-ours", str(base), str(tmp_path / "folder.safetensors")]) == 2
    assert "is an existing folder, where a file is to be written" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    assert convert_checkpoint.main(["to-ours", str(base), str(tmp_path / "a_file" / "out.safetensors")]) == 2
    assert f"its folder cannot be made: '{tmp_path / 'a_file'}' is a file" in capsys.readouterr().err
    # A folder output whose file would be one of the inputs: checked once the names are known, before writing.
    ours = tmp_path / "official" / "base_model.pt"
    ours.parent.mkdir()
    torch.save(files.load_weights_file(str(base)), ours)
    before = ours.read_bytes()
    assert convert_checkpoint.main(["to-official", str(ours), str(ours.parent)]) == 2
    assert f"the output file '{ours}' is SOURCE '{ours}'" in capsys.readouterr().err
    assert ours.read_bytes() == before
    # Missing inputs and folders given as files are named as what they are, in no family's words.
    for source, message in ((tmp_path / "missing.pt", "SOURCE {} does not exist"),
                            (tmp_path, "SOURCE {} is a folder, not a weights file")):
        assert convert_checkpoint.main(["to-ours", str(source), str(tmp_path / "o.safetensors"),
                                        "--new-control", "edge", "--num-control-blocks", "2"]) == 2
        err = capsys.readouterr().err
        assert message.format(source) in err and "Cosmos-2.5" not in err, err


def test_a_missing_transfer1_base_is_not_called_a_cosmos_2p5_file(tmp_path, capsys):
    missing = str(tmp_path / "base_model.pt")
    assert convert_checkpoint.main(["to-ours", missing, str(tmp_path / "o.safetensors"), "--new-control",
                                    "edge"]) == 2
    err = capsys.readouterr().err
    assert f"SOURCE {missing} does not exist" in err and "Cosmos-2.5" not in err


@pytest.mark.parametrize("count", ["0", "-1", "3", "99"])
def test_control_block_counts_the_base_cannot_give_are_refused(base, tmp_path, capsys, count):
    out = tmp_path / "init.safetensors"
    assert convert_checkpoint.main(["to-ours", str(base), str(out), "--new-control", "edge",
                                    "--num-control-blocks", count]) == 2
    err = capsys.readouterr().err
    assert f"--num-control-blocks {count}: a new branch starts from the base's first blocks" in err
    assert "has 2: give a number from 1 to 2" in err and not out.exists()
    assert convert_checkpoint.main(["to-ours", str(base), str(out), "--new-control", "edge",
                                    "--num-control-blocks", "2"]) == 0
    blocks = {k.split(".")[3] for k in files.load_weights_file(str(out)) if k.startswith("net_ctrl.edge.blocks.")}
    assert blocks == {"block0", "block1"}


def test_control_block_counts_that_would_be_ignored_are_refused(base, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:  # no --new-control to apply it to
        convert_checkpoint.main(["to-ours", str(base), str(tmp_path / "o.safetensors"), "--num-control-blocks", "2"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:  # the second file for a key would replace the first
        convert_checkpoint.main(["to-ours", str(base), str(tmp_path / "o.safetensors"), "--control", "edge=a.pt",
                                 "--control", "edge=b.pt"])
    assert exit_.value.code == 2 and "--control edge= is given twice (a.pt and b.pt)" in capsys.readouterr().err
    from tests.unit.test_model_v2_5 import _official_file, _source_model

    released = str(tmp_path / "edge_ema_bf16.pt")
    _official_file(_source_model(1).net, released)
    args = convert_checkpoint._parse(["to-ours", released, str(tmp_path / "o.safetensors"), "--control",
                                      f"edge={released}", "--new-control", "depth", "--num-control-blocks", "2"])
    with pytest.raises(files.WeightsFileError,
                       match="Cosmos-2.5 file, and --new-control, --num-control-blocks are options for"):
        convert_checkpoint.to_ours(args, convert_checkpoint._inputs(args))


def test_converted_files_have_a_plain_files_mode_and_no_partial_is_left(base, tmp_path):
    for name in ("init.safetensors", "init.pt"):
        assert convert_checkpoint.main(["to-ours", str(base), str(tmp_path / name), "--new-control", "edge",
                                        "--num-control-blocks", "1"]) == 0
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == _plain_mode(), name
    assert sorted(os.listdir(tmp_path)) == ["base_model.pt", "init.pt", "init.safetensors"]


# ------------------------------------------------------------------------ to-official of a job that trained its base
def _export_like(tmp_path, finetune_base: bool | None, metadata_flag: bool) -> str:
    """Our control-model weights as export_checkpoint.py writes them: `source` (the checkpoint) in the metadata,
    with `finetune_base` (this version) or without (then read from the job's config.yaml)."""
    from safetensors.torch import save_file

    from tests.unit.test_convert_checkpoint import control_model, state_of

    job = tmp_path / "job"
    checkpoint = job / "checkpoints" / "iter_000000008"
    checkpoint.mkdir(parents=True)
    if finetune_base is not None:
        (job / "config.yaml").write_text(f"model:\n  finetune_base: {str(finetune_base).lower()}\n")
    metadata = {"source": str(checkpoint)}
    if metadata_flag:
        metadata["finetune_base"] = str(finetune_base).lower()
    path = str(tmp_path / "export.safetensors")
    save_file({k: v.contiguous() for k, v in state_of(control_model()).items()}, path, metadata=metadata)
    return path


@pytest.mark.parametrize("metadata_flag", [True, False])
def test_to_official_writes_the_base_a_job_trained(tmp_path, capsys, metadata_flag):
    export = _export_like(tmp_path, finetune_base=True, metadata_flag=metadata_flag)
    assert convert_checkpoint.main(["to-official", export, str(tmp_path / "official")]) == 0
    assert sorted(os.listdir(tmp_path / "official")) == ["base_model.pt", "edge_control.pt"]
    assert "writing the base too: it was trained (model.finetune_base=true" in capsys.readouterr().out.replace(
        "True", "true")
    # One control file would leave the trained base out: refused (also when --finetune-base says so).
    for extra in ([], ["--finetune-base"]):
        assert convert_checkpoint.main(["to-official", export, str(tmp_path / "e.pt"), "--control-key", "edge",
                                        *extra]) == 2
        assert "was trained" in capsys.readouterr().err and not (tmp_path / "e.pt").exists()


def test_to_official_leaves_a_frozen_base_out(tmp_path, capsys):
    export = _export_like(tmp_path, finetune_base=False, metadata_flag=True)
    assert convert_checkpoint.main(["to-official", export, str(tmp_path / "official")]) == 0
    assert sorted(os.listdir(tmp_path / "official")) == ["edge_control.pt"]
    assert "tensors): it was frozen (model.finetune_base=false in its metadata), so it is NVIDIA" in \
        capsys.readouterr().out
    assert convert_checkpoint.main(["to-official", export, str(tmp_path / "e.pt"), "--control-key", "edge"]) == 0


# ------------------------------------------------------------------------------------------------- export_checkpoint
def _fake_checkpoint(tmp_path, frozen_base_path=None):
    """A folder that passes for a DCP checkpoint until it is read (its .metadata is not one): a refusal that comes
    before any reading says so by not failing on it."""
    folder = tmp_path / "job" / "checkpoints" / "iter_000000004"
    folder.mkdir(parents=True)
    (folder / ".metadata").write_bytes(b"not read")
    (folder.parent / "latest_checkpoint.txt").write_text("iter_000000004\n")
    if frozen_base_path is not None:
        (folder / "frozen_base.json").write_text(json.dumps({"path": str(frozen_base_path), "size": 1,
                                                             "crc32": "00000000", "keys": []}))
    return folder


def test_export_refuses_outputs_that_are_its_inputs_before_reading(tmp_path, capsys):
    base = tmp_path / "base.safetensors"  # the frozen base of a lean checkpoint (never read here)
    base.write_bytes(b"the frozen base")
    folder = _fake_checkpoint(tmp_path, frozen_base_path=base)
    original = base.read_bytes()
    cases = [
        ([str(folder), "--out", str(base)], f"--out '{base}' is the frozen base that frozen_base.json names"),
        ([str(folder.parent), "--out", str(folder / "model.safetensors")], "lies inside the checkpoint"),
        ([str(folder), "--out", str(tmp_path / "m.safetensors"), "--lora", "separate", "--lora_out",
          str(tmp_path / "m.safetensors")], "--lora_out and --out are both"),
        ([str(folder), "--out", str(tmp_path / "m.safetensors"), "--lora", "separate", "--lora_out", str(base)],
         f"--lora_out '{base}' is the frozen base"),
    ]
    (tmp_path / "existing.safetensors").mkdir()
    cases.append(([str(folder), "--out", str(tmp_path / "existing.safetensors")], "is an existing folder"))
    (tmp_path / "a_file").write_text("x")
    cases.append(([str(folder), "--out", str(tmp_path / "a_file" / "m.safetensors")], "is a file, not a folder"))
    for argv, message in cases:
        assert export_checkpoint.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("export_checkpoint: error: ") and message in err, (argv, err)
        assert base.read_bytes() == original


def _dcp_checkpoint(tmp_path, state: dict, trainer_state: dict | None = None, config: str | None = None):
    import torch.distributed.checkpoint as dcp

    from cosmos_transfer.trainer import safe_dcp

    job = tmp_path / "job"
    folder = job / "checkpoints" / "iter_000000002"
    dcp.save(state, checkpoint_id=str(folder), no_dist=True)
    (folder / "trainer_state_rank0.json").write_text(json.dumps({"iteration": 2, **(trainer_state or {})}))
    safe_dcp.write_manifest(str(folder), sorted(os.listdir(folder)))
    if config is not None:
        (job / "config.yaml").write_text(config)
    return folder


def test_export_mode_metadata_and_both_lora_files_named(tmp_path, capsys):
    from safetensors import safe_open

    layer = "net_ctrl.edge.blocks.0.proj"
    model = {f"{layer}.base_layer.weight": torch.randn(4, 4), f"{layer}.lora_A.default.weight": torch.randn(2, 4),
             f"{layer}.lora_B.default.weight": torch.randn(4, 2), "net.x": torch.randn(3)}
    folder = _dcp_checkpoint(tmp_path, {"model": model}, {"lora": {"rank": 2, "alpha": 4, "target_modules": ["x"]}},
                             config="model:\n  finetune_base: false\n")
    out = tmp_path / "exported" / "model.safetensors"  # a missing folder is made
    assert export_checkpoint.main([str(folder), "--out", str(out), "--lora", "separate"]) == 0
    printed = capsys.readouterr().out
    adapters = tmp_path / "exported" / "model.lora.safetensors"
    assert f"wrote {adapters}: the LoRA adapters" in printed and f"wrote {out}:" in printed
    for path in (out, adapters):
        assert stat.S_IMODE(os.stat(path).st_mode) == _plain_mode(), path
    assert sorted(os.listdir(out.parent)) == ["model.lora.safetensors", "model.safetensors"]  # no partial left
    with safe_open(str(out), framework="pt") as handle:
        assert handle.metadata() == {"source": str(folder), "finetune_base": "false"}


# ------------------------------------------------------------------------------------------------------ cli helpers
def test_writing_never_leaves_a_half_written_file_under_the_final_name(tmp_path):
    from cosmos_transfer.cli import writing

    target = tmp_path / "weights.safetensors"
    target.write_text("the previous file")
    with pytest.raises(RuntimeError):
        with writing(str(target)) as temporary:
            assert temporary.endswith(".safetensors") and os.path.dirname(temporary) == str(tmp_path)
            open(temporary, "w").write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "the previous file" and os.listdir(tmp_path) == ["weights.safetensors"]
    with writing(str(target)) as temporary:
        open(temporary, "w").write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["weights.safetensors"]


def test_check_outputs_names_both_paths(tmp_path):
    from cosmos_transfer.cli import OutputPathError, check_outputs

    source = tmp_path / "in.pt"
    source.write_text("x")
    check_outputs({"OUT": str(tmp_path / "new.pt")}, {"SOURCE": str(source), "unused": None})
    with pytest.raises(OutputPathError, match=r"OUT '.*in.pt' is SOURCE '.*in.pt' \(the same file\)"):
        check_outputs({"OUT": str(source)}, {"SOURCE": str(source)})
    check_outputs({"OUT": str(tmp_path)}, {}, folders=("OUT",))  # a folder output may exist
    if os.path.isdir("/proc/self"):  # no file can be made there, not even by root (for whom os.access says yes)
        with pytest.raises(OutputPathError, match="nothing can be written in the folder '/proc/self'"):
            check_outputs({"OUT": "/proc/self/out.safetensors"}, {})
    with pytest.raises(OutputPathError, match="is an existing file, where a folder"):
        check_outputs({"OUT": str(source)}, {}, folders=("OUT",))


def test_export_of_something_that_is_no_checkpoint_is_named(tmp_path, capsys):
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    for source, message in ((tmp_path / "missing", "does not exist"),
                            (tmp_path / "weights.safetensors", "is a file, not a checkpoint folder"),
                            (tmp_path / "empty", "is neither a DCP checkpoint")):
        assert export_checkpoint.main([str(source), "--out", str(tmp_path / "o.safetensors")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("export_checkpoint: error: ") and message in err, err


def test_writing_gives_a_new_file_a_plain_mode_and_keeps_a_replaced_files(tmp_path):
    from cosmos_transfer.cli import writing

    new, kept = tmp_path / "new.safetensors", tmp_path / "kept.safetensors"
    kept.write_text("old")
    os.chmod(kept, 0o640)
    for path in (new, kept):
        with writing(str(path)) as temporary:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT, 0o600))  # as safetensors creates its file
    assert stat.S_IMODE(os.stat(new).st_mode) == _plain_mode()
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o640


def test_a_jobs_config_that_says_nothing_leaves_the_choice_to_the_flag(tmp_path, capsys):
    from cosmos_transfer.checkpoints import transfer1

    export = _export_like(tmp_path, finetune_base=None, metadata_flag=False)
    for text in ("model: [unclosed", "- a list", "model:\n  finetune_base: maybe\n", "\xff"):
        (tmp_path / "job" / "config.yaml").write_bytes(text.encode("latin-1"))
        assert transfer1.base_was_trained(export)[0] is None, text
    assert convert_checkpoint.main(["to-official", export, str(tmp_path / "official")]) == 0
    assert sorted(os.listdir(tmp_path / "official")) == ["edge_control.pt"]
    assert convert_checkpoint.main(["to-official", export, str(tmp_path / "whole"), "--finetune-base"]) == 0
    assert sorted(os.listdir(tmp_path / "whole")) == ["base_model.pt", "edge_control.pt"]
