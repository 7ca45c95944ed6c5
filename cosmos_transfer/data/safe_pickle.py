"""A restricted unpickler for Cosmos' prepared datasets (`t5_xxl/*.pickle`, `seg/*.pickle`, `keypoint/*.pickle`).

A plain `pickle.load` runs whatever code the file names; a dataset downloaded from elsewhere must never get that
power. This unpickler admits only plain containers (list, dict, tuple, set, str, bytes, numbers, None, which pickle
builds without importing anything) and numpy arrays, dtypes and scalars. Any other global, for example
`os.system` or `builtins.eval`, is refused with UnsafePickleError naming it and the file.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

# (module, name) pairs a pickle may reference. numpy moved `core` to `_core` in 2.0; pickles from both exist.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # Protocol-2 pickles store bytes as `_codecs.encode(text, "latin1")`: a pure conversion, nothing else.
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
}
# numpy dtype classes (numpy.dtypes.Float16DType, ...) appear in some numpy >= 1.25 pickles.
_ALLOWED_MODULE_PREFIXES = ("numpy.dtypes",)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references something other than numpy arrays and plain containers."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol <= 2 pickles use Python 2 names
        if (module, name) in _ALLOWED_GLOBALS or (module.startswith(_ALLOWED_MODULE_PREFIXES) and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load {self._source}: it references {module}.{name}; only numpy arrays and plain containers "
            f"are allowed in dataset pickles"
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing to load {self._source}: it uses persistent ids, which are not allowed")


def safe_load(path: str | os.PathLike) -> Any:
    """Load a pickle file that may contain only numpy arrays and plain containers."""
    with open(path, "rb") as file:
        return _RestrictedUnpickler(file, str(path)).load()


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    return _RestrictedUnpickler(io.BytesIO(data), source).load()
