"""Per-clip text embedding files: ours (safetensors) and Cosmos' (`t5_xxl/<stem>.pickle`, read safely).

Our file `<folder>/<stem>.safetensors` holds one tensor `embeddings` [n_tokens, D] with only the caption's real
tokens (float16 or float32), and string metadata `encoder`, `max_length`, `caption`. Cosmos-Reason1 files (the 2.5
family) hold all 512 positions in bfloat16, D = 100,352, or D = 1,024 once projected by a base's crossattn_proj
(metadata `projection`, `projection_sha256`; text_encoders.py). Cosmos' pickle holds a list
with one float16 array [n_tokens, 1024] (or the array itself). Both are padded with zeros to a fixed length L when
loaded, with a mask that is 1 on real tokens.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cosmos_transfer.config.errors import DataError
from cosmos_transfer.data.safe_pickle import safe_load
from cosmos_transfer.data.video import BadSampleError

EMBEDDING_SUFFIXES = (".safetensors", ".pickle", ".pkl")


def save_text_embedding(path: str | os.PathLike, embeddings, *, encoder: str, max_length: int, caption: str,
                        extra_metadata: dict[str, str] | None = None) -> None:
    """Write the embeddings [n, D] of one caption (a numpy array or a tensor, whose dtype is kept: bf16 too).

    `extra_metadata`: more string fields, e.g. `projection` for embeddings cached after the DiT's crossattn_proj."""
    if isinstance(embeddings, torch.Tensor):
        tensor = embeddings.detach().cpu().contiguous()
    else:
        tensor = torch.as_tensor(np.asarray(embeddings)).contiguous()
    if tensor.ndim != 2 or tensor.shape[0] == 0:
        raise ValueError(f"{path}: expected embeddings shaped [n_tokens > 0, D], got {tuple(tensor.shape)}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    metadata = {"encoder": encoder, "max_length": str(max_length), "caption": caption, **(extra_metadata or {})}
    save_file({"embeddings": tensor}, str(path), metadata=metadata)


def text_embedding_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of one of our embedding files (empty for a Cosmos pickle)."""
    if not str(path).endswith(".safetensors"):
        return {}
    try:
        with safe_open(str(path), framework="pt") as file:
            return dict(file.metadata() or {})
    except SafetensorError as error:
        raise BadSampleError(f"{path}: unreadable embedding file: {error}") from error


def find_text_embedding(folder: str | os.PathLike, stem: str) -> str | None:
    """The embedding file of a clip in `folder` (safetensors preferred over a Cosmos pickle), or None."""
    for suffix in EMBEDDING_SUFFIXES:
        path = os.path.join(folder, stem + suffix)
        if os.path.isfile(path):
            return path
    return None


def text_embedding_dim(path: str | os.PathLike) -> int:
    """D of an embedding file, reading only the header for safetensors."""
    if str(path).endswith(".safetensors"):
        try:
            with safe_open(str(path), framework="pt") as file:
                return int(file.get_slice("embeddings").get_shape()[-1])
        except (SafetensorError, KeyError) as error:
            raise BadSampleError(f"{path}: unreadable embedding file: {error}") from error
    return int(load_text_embedding(path).shape[-1])


def load_text_embedding(path: str | os.PathLike) -> np.ndarray:
    """Real-token embeddings of one caption -> float32 [n_tokens, D]."""
    path = str(path)
    if path.endswith(".safetensors"):
        try:
            with safe_open(path, framework="pt") as file:
                if "embeddings" not in file.keys():
                    raise BadSampleError(f"{path}: no 'embeddings' tensor (found {list(file.keys())})")
                array = file.get_tensor("embeddings").float().numpy()
        except SafetensorError as error:
            raise BadSampleError(f"{path}: unreadable safetensors file: {error}") from error
    elif path.endswith((".pickle", ".pkl")):
        data = safe_load(path)
        if isinstance(data, (list, tuple)):  # Cosmos writes [array] for one caption
            if len(data) == 0:
                raise BadSampleError(f"{path}: empty list, expected one embedding array")
            data = data[0]
        if not isinstance(data, np.ndarray):
            raise BadSampleError(f"{path}: expected a numpy array or a list holding one, got {type(data).__name__}")
        array = data.astype(np.float32)
    else:
        raise BadSampleError(f"{path}: unknown embedding file type; expected one of {EMBEDDING_SUFFIXES}")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise BadSampleError(f"{path}: expected embeddings shaped [n_tokens, D], got {array.shape}")
    if not np.isfinite(array).all():
        raise BadSampleError(f"{path}: embeddings contain NaN or Inf")
    return array


def pad_text_embedding(embeddings: np.ndarray, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, D] -> (float32 [L, D] zero-padded or truncated, float32 mask [L] with 1 on real tokens)."""
    n, dim = embeddings.shape
    n = min(n, length)
    padded = torch.zeros(length, dim, dtype=torch.float32)
    padded[:n] = torch.from_numpy(np.ascontiguousarray(embeddings[:n], dtype=np.float32))
    mask = torch.zeros(length, dtype=torch.float32)
    mask[:n] = 1.0
    return padded, mask


def projection_mismatch(folder: str | os.PathLike, weights_path: str) -> str | None:
    """Why the projected embeddings of `folder` cannot train the base in `weights_path`, or None: embeddings cached
    after one base's crossattn_proj (scripts/prepare_dataset.py --project-with) are that base's reading of the
    text, and a base with another crossattn_proj would train on text it does not read that way. Compared by the
    fingerprint every projected file records; the folder's files are all of one kind (VideoDataset checks that)."""
    from cosmos_transfer.data.text_encoders import crossattn_proj_fingerprint, read_crossattn_proj

    folder = str(folder)
    names = sorted(name for name in os.listdir(folder) if name.endswith(".safetensors")) \
        if os.path.isdir(folder) else []
    if not names:
        return None
    example = os.path.join(folder, names[0])
    meta = text_embedding_metadata(example)
    if "projection_sha256" not in meta:
        return None  # raw embeddings: the base projects them itself
    from cosmos_transfer.checkpoints.files import WeightsFileError

    try:
        weight, bias = read_crossattn_proj(weights_path)
    except (DataError, WeightsFileError):
        return None  # no crossattn_proj in the file, or not a 2.5 file: loading it says what it is
    base = crossattn_proj_fingerprint(weight, bias)
    if base == meta["projection_sha256"]:
        return None
    return (f"the text embeddings in {folder} were projected by {meta.get('projection', 'another crossattn_proj')} "
            f"(sha256 {meta['projection_sha256']}, recorded in {names[0]} and the others), but the base "
            f"{weights_path} has another crossattn_proj (sha256 {base}): it would train on text projected by "
            f"another base. Project them with this base: scripts/prepare_dataset.py "
            f"{os.path.dirname(folder.rstrip(os.sep))} --text_encoder <Cosmos-Reason1-7B folder> --project-with "
            f"{weights_path} --overwrite (or train on the raw embeddings with text_embeddings_projected=False)")
