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


def load_torch_file(path: str, what: str = "weights file", redownload: str = "") -> object:
    """torch.load(weights_only=True) of `path`, memory-mapped where the format allows.

    Also accepts the io.BytesIO objects in which older Transformer Engine releases stored `_extra_state` (a harmless
    container of bytes; nothing else outside tensors and plain containers is allowed)."""
    require_file(path, what, redownload)
    with torch.serialization.safe_globals([io.BytesIO]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as error:
            if "weights only" in str(error).lower() or "weights_only" in str(error):
                raise WeightsFileError(
                    f"{what} {path} holds Python objects other than tensors and plain containers, which are not "
                    f"loaded for safety (weights_only=True): {_first_line(error)}. Re-save it as a plain dict of "
                    "tensors (or export it with scripts/export_checkpoint.py)"
                ) from None
            raise damaged(path, what, error, redownload) from None
        except RuntimeError as error:
            if "mmap" not in str(error):  # mmap needs the zip format; older torch.save files are read in full
                raise damaged(path, what, error, redownload) from None
        except Exception as error:  # noqa: BLE001 - EOFError, zip and unpickling errors of a damaged file
            raise damaged(path, what, error, redownload) from None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001
            raise damaged(path, what, error, redownload) from None


def load_safetensors_file(path: str, what: str = "weights file", redownload: str = "") -> dict[str, torch.Tensor]:
    """All tensors of a `.safetensors` file, or a clear error for a damaged header or truncated data."""
    require_file(path, what, redownload)
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except Exception as error:  # noqa: BLE001 - SafetensorError (header, size), OSError
        raise damaged(path, what, error, redownload) from None


def load_weights_file(path: str, what: str = "weights file", lazy: bool = False) -> object:
    """A `.safetensors` file (a dict of tensors) or anything else as a torch file (what torch.save wrote).

    lazy: read nothing yet: a `.safetensors` file gives placeholders that trainer/shard_loading.py reads rows of
    (torch files are memory-mapped either way)."""
    if path.endswith(".safetensors"):
        if lazy:
            require_file(path, what)
            try:
                return SafetensorsFile(path)
            except Exception as error:  # noqa: BLE001 - SafetensorError (header), OSError
                raise damaged(path, what, error) from None
        return load_safetensors_file(path, what)
    return load_torch_file(path, what)


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
