"""Reading and writing weight files safely, with one clear message for a file that is damaged or incomplete.

Every file a user downloads or copies (an official `base_model.pt`, a `.safetensors` export, a tokenizer's
`mean_std.pt`) is read here: torch files with weights_only=True (never unpickling arbitrary objects), and a truncated
or corrupt file is named with what is wrong and what to do, instead of torch's traceback ("PytorchStreamReader failed
reading zip archive: failed finding central directory" is an interrupted download).
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections.abc import Iterator

import torch

from cosmos_transfer.config.errors import UserError


class WeightsFileError(UserError, ValueError):
    """A weights file that cannot be read (damaged, incomplete, or not what was expected)."""


def _size(path: str) -> str:
    size = os.path.getsize(path)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def damaged(path: str, what: str, error: BaseException | str, redownload: str = "") -> WeightsFileError:
    """The error for a file that exists but cannot be read: its name, size, the reader's first line, what to do."""
    reason = error if isinstance(error, str) else _first_line(error)
    todo = redownload or "download it again (or re-create it)"
    return WeightsFileError(
        f"{what} {path} ({_size(path)}) cannot be read: {reason}. It is damaged or incomplete, typically an "
        f"interrupted download or copy: {todo}."
    )


def require_file(path: str, what: str, redownload: str = "") -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not os.path.isfile(path):
        raise WeightsFileError(f"{what} {path} is not a file")
    if os.path.getsize(path) == 0:
        raise damaged(path, what, "the file is empty", redownload)


def load_torch_file(path: str, what: str = "weights file", redownload: str = "", check_values: bool = True) -> object:
    """torch.load(weights_only=True) of `path`, memory-mapped where the format allows; with `check_values`, a file
    holding NaN or inf is refused (check_finite).

    Also accepts the io.BytesIO objects in which older Transformer Engine releases stored `_extra_state` (a harmless
    container of bytes; nothing else outside tensors and plain containers is allowed)."""
    require_file(path, what, redownload)
    loaded = _torch_load(path, what, redownload)
    if check_values:
        check_finite(loaded, path, what)
    return loaded


def _torch_load(path: str, what: str, redownload: str) -> object:
    with torch.serialization.safe_globals([io.BytesIO]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as error:
            raise _unpickling_error(path, what, error, redownload) from None
        except RuntimeError as error:
            if "mmap" not in str(error):  # mmap needs the zip format; older torch.save files are read in full
                raise damaged(path, what, error, redownload) from None
        except Exception as error:  # noqa: BLE001 - EOFError, zip and unpickling errors of a damaged file
            raise damaged(path, what, error, redownload) from None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise _unpickling_error(path, what, error, redownload) from None
        except Exception as error:  # noqa: BLE001
            raise damaged(path, what, error, redownload) from None


def _unpickling_error(path: str, what: str, error: pickle.UnpicklingError, redownload: str) -> WeightsFileError:
    """A file weights_only refuses (it names code to call when unpickled) is not opened, and we never advise
    opening it anyway (torch's own message suggests loading it without the weights-only guard, which would run that
    code)."""
    text = str(error)
    wanted = re.search(r"GLOBAL ([\w.]+)", text)  # how a pickle names the code it calls
    if wanted is None:  # not a pickle of objects: a damaged file (random bytes read as unknown opcodes)
        advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
        reasons = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(advice)]
        return damaged(path, what, reasons[0] if reasons else "not a torch file", redownload)
    return WeightsFileError(
        f"{what} {path} holds Python objects other than tensors and plain containers (it asks to call "
        f"{wanted.group(1)}): opening such a file "
        "can run code it carries, so it is refused and was not opened. Get the weights as a .safetensors file, or as "
        "a .pt holding only a dict of tensors, from its provider; or, only if you trust where it comes from, convert "
        "it to one with that provider's own code (load it there and save the state dict with "
        "safetensors.torch.save_file)"
    )


def load_safetensors_file(path: str, what: str = "weights file", redownload: str = "",
                          check_values: bool = True) -> dict[str, torch.Tensor]:
    """All tensors of a `.safetensors` file, or a clear error for a damaged header or truncated data; with
    `check_values`, a file holding NaN or inf is refused (check_finite)."""
    require_file(path, what, redownload)
    from safetensors.torch import load_file

    try:
        loaded = load_file(path, device="cpu")
    except Exception as error:  # noqa: BLE001 - SafetensorError (header, size), OSError
        raise damaged(path, what, error, redownload) from None
    if check_values:
        check_finite(loaded, path, what)
    return loaded


def load_weights_file(path: str, what: str = "weights file", lazy: bool = False, check_values: bool = True) -> object:
    """A `.safetensors` file (a dict of tensors) or anything else as a torch file (what torch.save wrote).

    lazy: read nothing yet: a `.safetensors` file gives placeholders that trainer/shard_loading.py reads rows of
    (torch files are memory-mapped either way).
    check_values: refuse a file holding NaN or inf (check_finite: one pass over the values, a tensor at a time, also
    for a lazy file); False only to peek at a file's names (what layout it is)."""
    if path.endswith(".safetensors"):
        if lazy:
            require_file(path, what)
            try:
                placeholders = SafetensorsFile(path)
            except Exception as error:  # noqa: BLE001 - SafetensorError (header), OSError
                raise damaged(path, what, error) from None
            if check_values:
                check_finite(placeholders, path, what)
            return placeholders
        return load_safetensors_file(path, what, check_values=check_values)
    return load_torch_file(path, what, check_values=check_values)


# ----------------------------------------------------------------------------------------------------------------------
# Finite values: NaN or inf in weights make the model compute NaN, which decodes to an all-black video


_CHUNK = 1 << 20  # elements summed at a time: a small temporary, and fp16 sums rarely overflow


def non_finite_count(tensor: torch.Tensor) -> int:
    """How many NaN / inf values `tensor` holds (0 for integer tensors).

    Cheap: a sum per chunk, at memory speed and without a copy (a sum of finite values is finite unless it overflows,
    and any NaN or inf makes it non-finite); only a chunk whose sum is not finite is counted exactly."""
    if not tensor.is_floating_point():
        return 0
    flat = tensor.reshape(-1)
    bad = 0
    for start in range(0, flat.numel(), _CHUNK):
        chunk = flat[start : start + _CHUNK]
        if chunk.element_size() == 1:  # float8 has no sum
            chunk = chunk.float()
        if not bool(torch.isfinite(chunk.sum())):
            bad += int((~torch.isfinite(chunk)).sum())
    return bad


def _named_tensors(value: object) -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) of every tensor inside a loaded file's containers (dicts, lists, tuples), in order; a
    walk with its own stack, as a hostile file may nest containers deeper than Python's recursion limit."""
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        prefix, item = stack.pop()
        if isinstance(item, torch.Tensor):
            yield prefix, item
            continue
        if isinstance(item, dict):
            children = list(item.items())
        elif isinstance(item, (list, tuple)):
            children = list(enumerate(item))
        else:
            continue
        stack.extend((f"{prefix}.{key}" if prefix else str(key), child) for key, child in reversed(children))


def check_finite(loaded: object, path: str, what: str = "weights file") -> None:
    """Refuse a file whose tensors hold NaN or inf, naming the first such tensor and how many bad values it holds.

    `loaded` is what a reader of this module returned: tensors in plain containers (memory-mapped ones are paged in
    once), or a lazy SafetensorsFile, whose tensors are read one at a time and released. Every weights reader calls
    this (load_torch_file, load_safetensors_file, load_weights_file; lora.read_adapters for adapter files)."""
    for name, tensor in _named_tensors(loaded):
        if tensor.is_meta and hasattr(tensor, "_safetensors_key"):
            tensor = tensor._safetensors_file.handle.get_tensor(tensor._safetensors_key)
        bad = non_finite_count(tensor)
        if bad:
            nan = int(torch.isnan(tensor).sum())
            name = name if len(name) <= 200 else f"{name[:100]}...{name[-97:]}"  # a hostile file's nesting
            raise WeightsFileError(
                f"{what} {path}: tensor '{name}' {tuple(tensor.shape)} holds {bad} non-finite values ({nan} NaN, "
                f"{bad - nan} inf) of {tensor.numel()} (the first such tensor in the file). A model with such weights "
                "computes NaN and generates an all-black video. The file is damaged or was saved from a run whose "
                "training diverged: use an earlier checkpoint, or download (or re-create) the file again"
            )


def save_weights_file(state: dict[str, torch.Tensor], path: str, dtype: torch.dtype | None = None) -> None:
    """Save weights as `.safetensors` (ours) or `.pt` (torch.save of a plain dict, the official container)."""
    if not path.endswith((".safetensors", ".pt")):
        raise ValueError(f"save_weights_file: {path} must end in .safetensors or .pt")
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save({k: v.contiguous() for k, v in state.items()}, path)


class SafetensorsFile(dict):
    """The tensors of a `.safetensors` file as placeholders (meta tensors: name, shape, dtype; nothing read), each
    remembering where it comes from; trainer/shard_loading.py's read_rows reads only the rows a rank holds
    (safe_open / get_slice)."""

    def __init__(self, path: str) -> None:
        from safetensors import safe_open

        super().__init__()
        self.path = path
        self.handle = safe_open(path, framework="pt", device="cpu")
        for key in self.handle.keys():
            piece = self.handle.get_slice(key)
            placeholder = torch.empty(piece.get_shape(), dtype=_SAFETENSORS_DTYPES[piece.get_dtype()], device="meta")
            placeholder._safetensors_key = key  # read back by read_rows
            placeholder._safetensors_file = self
            self[key] = placeholder


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}
