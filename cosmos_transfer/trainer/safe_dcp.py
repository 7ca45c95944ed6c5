"""Reading torch.distributed.checkpoint (DCP) folders without running code, and checking that they are intact.

DCP's own reader unpickles `.metadata` with plain `pickle.load`, and its load planner reads every non-tensor item
(optimizer hyperparameters, counters) with `torch.load` without weights_only: a checkpoint folder from someone else
could run any code when it is read. Here
- `.metadata` goes through an unpickler that only builds what DCP writes there (its metadata dataclasses,
  torch.Size, dtypes, the strided layout, a pathlib path), checked against torch 2.13's files;
- non-tensor items are read with `torch.load(weights_only=True)` (plain numbers, strings, lists, tuples, dicts);
- tensors DCP already reads weights-only.

Integrity: DCP keeps no checksums, so a flipped byte in a shard would be trained on. Every checkpoint we write gets a
`manifest.json` (size and CRC-32 of each of its files) before it is published; `verify_checkpoint` compares the files
with it, and every file a reader uses (.metadata, the shards it names, the JSON files beside them) must have its entry.
Integrity cannot be switched off by omission: the DCP metadata of every checkpoint written with a manifest carries
the item `manifest_format` (MANIFEST_MARK), so a folder whose manifest.json is gone is damaged. Only a folder whose
.metadata lacks the mark predates manifests; it still gets a structural check (every shard the metadata names exists
and is long enough). Removing the mark means rewriting the pickled .metadata: a forgery, which no checksum stored
beside the files could stop either. See BENCHMARKS.md for what the checksums cost.

Every function that reads a checkpoint for the project goes through `read_metadata`, `load` and `verify_checkpoint`.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import zlib
from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint._traverse import set_element  # where DefaultLoadPlanner.load_bytes takes it from
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import Metadata

from cosmos_transfer.config.errors import UserError

METADATA_FILE = ".metadata"
MANIFEST_FILE = "manifest.json"
MANIFEST_PART = "manifest_rank{rank}.part.json"  # one per rank while a checkpoint is written, merged by rank 0
# The mark of a checkpoint written with a manifest: a DCP item every save of this version adds (`with_mark`), so that
# the .metadata itself says a manifest belongs to the folder. Deleting manifest.json leaves the mark: damage, not age.
MANIFEST_MARK = "manifest_format"
MANIFEST_FORMAT = 1
_CHUNK = 16 << 20


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong (entry points print it)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file holds something other than plain data (it could run code if unpickled)."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint's files are missing, truncated or do not match its manifest."""


class ResumeError(CheckpointError):
    """A job's checkpoint does not match the run resuming it (another model, learning rate, LoRA rank, ...); the
    message says what the checkpoint holds, what the config asks and how to proceed."""


# ----------------------------------------------------------------------------------------------------------------------
# .metadata through a restricted unpickler

# Exactly the globals DCP (torch 2.13) pickles into .metadata; anything else is refused before it is built.
_ALLOWED_GLOBALS = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},  # looks a torch.layout up by name ("torch.strided")
    "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"},  # StorageMeta.checkpoint_id
    "collections": {"OrderedDict"},
}


class _MetadataUnpickler(pickle._Unpickler):  # the Python implementation: its BUILD can be checked too
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)):
            return getattr(torch, name)
        if name in _ALLOWED_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it holds persistent references")

    def load_build(self) -> None:
        # BUILD sets attributes of the object below it; on an allowed class itself that would change the class.
        if len(self.stack) >= 2 and isinstance(self.stack[-2], type):
            raise pickle.UnpicklingError(f"it asks to change the class {self.stack[-2].__qualname__}")
        super().load_build()

    dispatch = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: load_build}


def read_metadata(path: str, rank: int | None = None) -> Metadata:
    """The DCP metadata of checkpoint folder `path` (`rank`: a per-rank `__<rank>.metadata` file), read safely."""
    name = METADATA_FILE if rank is None else f"__{rank}{METADATA_FILE}"
    file = os.path.join(str(path), name)
    if not os.path.isfile(file):
        raise DamagedCheckpointError(f"{path} is not a complete DCP checkpoint: {name} is missing")
    with open(file, "rb") as stream:
        try:
            metadata = _MetadataUnpickler(stream).load()
        except pickle.UnpicklingError as error:
            if not str(error).startswith("it "):  # not one of our refusals: a broken file
                raise DamagedCheckpointError(f"{file} is damaged: not a readable DCP metadata file ({error})") from None
            raise UnsafeCheckpointError(
                f"refusing to read {file}: {error}, which DCP checkpoint metadata never contains, so loading it "
                "could run code. Only plain DCP metadata is read; if this checkpoint is yours, it was altered after "
                "it was written. Do not use this folder; ask its author for a fresh copy."
            ) from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
            raise DamagedCheckpointError(
                f"{file} is damaged: not a readable DCP metadata file ({type(error).__name__}: {error})"
            ) from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.state_dict_metadata, dict):
        raise DamagedCheckpointError(f"{file} is damaged: it holds a {type(metadata).__name__}, not DCP metadata")
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """DCP's file reader with `.metadata` read through the restricted unpickler."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_metadata(str(self.path), kwargs.get("rank"))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id  # as FileSystemReader does
        return metadata

    def read_data(self, plan: Any, planner: Any) -> Any:
        files = sorted({str(self.storage_data[item.storage_index].relative_path) for item in plan.items})
        try:
            return super().read_data(plan, planner)
        except CheckpointError as error:  # from the planner's load_bytes: say which shard(s)
            raise type(error)(f"{error} (read from {', '.join(files)})") from None
        # A shard whose bytes are not a readable torch file (DCP reads tensors weights-only already); a size
        # mismatch with the model is an AssertionError and keeps DCP's own words.
        except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as error:
            raise DamagedCheckpointError(
                f"checkpoint {self.path} is damaged: reading {', '.join(files)} failed ({_torch_load_detail(error)})"
            ) from None


def _torch_load_detail(error: BaseException) -> str:
    """The line of a torch.load error that says what is wrong (not its advice to load without weights_only)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for word in ("GLOBAL", "Unsupported", "PytorchStreamReader", "error"):
        for line in lines:
            if word in line and "weights_only` set to `False`" not in line:
                return line
    return lines[0] if lines else type(error).__name__


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, reading non-tensor items weights-only (plain data, never objects)."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        name = read_item.dest_index.fqn
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as error:
            detail = _torch_load_detail(error)
            if "GLOBAL" not in detail:  # not a class or function it asks for: bytes that are not a pickle
                raise DamagedCheckpointError(f"the non-tensor item {name!r} is damaged ({detail})") from None
            raise UnsafeCheckpointError(
                f"refusing to read the non-tensor item {name!r}: it is not plain data, so loading it could run code "
                f"({detail})"
            ) from None
        except (RuntimeError, EOFError, ValueError) as error:
            raise DamagedCheckpointError(f"the non-tensor item {name!r} is damaged ({_torch_load_detail(error)})") \
                from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def _own_error(error: BaseException) -> BaseException | None:
    """Our refusal inside DCP's wrapping (CheckpointException holds each rank's exception)."""
    if isinstance(error, (UnsafeCheckpointError, DamagedCheckpointError)):
        return error
    for failure in getattr(error, "failures", {}).values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, (UnsafeCheckpointError, DamagedCheckpointError)):
            return inner
    return None


def load(
    state_dict: dict[str, Any],
    path: str,
    *,
    process_group: Any = None,
    no_dist: bool = False,
    allow_partial_load: bool = False,
) -> None:
    """`dcp.load` of checkpoint folder `path` into `state_dict`, in place, without running code from the files.

    Checks first that every shard the metadata names exists and is long enough (a truncated file is named as such).
    """
    path = str(path)
    check_shard_files(path, read_metadata(path))
    try:
        dcp.load(
            state_dict,
            storage_reader=SafeFileSystemReader(path),
            planner=SafeLoadPlanner(allow_partial_load=allow_partial_load),
            process_group=process_group,
            no_dist=no_dist,
        )
    except (Exception, CheckpointException) as error:  # CheckpointException is a BaseException
        own = _own_error(error)
        if own is None:
            raise
        message = str(own)
        raise type(own)(message if path in message else f"checkpoint {path}: {message}") from None


def check_shard_files(path: str, metadata: Metadata) -> None:
    """Every file the metadata points into exists inside `path` and holds the byte ranges it names."""
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        name = str(getattr(info, "relative_path", ""))
        if not name or os.path.basename(name) != name or name in (".", ".."):
            raise UnsafeCheckpointError(
                f"refusing to read {os.path.join(path, METADATA_FILE)}: it points at {name!r}, outside the checkpoint "
                "folder"
            )
        if int(info.offset) < 0 or int(info.length) < 0:
            raise DamagedCheckpointError(f"{os.path.join(path, METADATA_FILE)} is damaged: a negative offset or length")
        needed[name] = max(needed.get(name, 0), int(info.offset) + int(info.length))
    for name, end in sorted(needed.items()):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise DamagedCheckpointError(f"checkpoint {path} is damaged: its shard {name} is missing")
        size = os.path.getsize(file)
        if size < end:
            raise DamagedCheckpointError(
                f"checkpoint {path} is damaged: its shard {name} has {size} bytes but the metadata places data up to "
                f"byte {end} (the file is truncated)"
            )


# ----------------------------------------------------------------------------------------------------------------------
# Manifest: size and CRC-32 of every file


def not_regular(path: str) -> str | None:
    """What `path` is when it is not a regular file (a FIFO, a device, a folder, ...), found without opening it (a
    FIFO's open() waits for a writer forever, a device may never end); None for a regular file or nothing there."""
    try:
        mode = os.stat(path).st_mode  # follows links: a link to /dev/zero is a device
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
    return next((kind for test, kind in kinds.items() if test(mode)), "not a file")


def file_checksum(path: str) -> dict[str, Any]:
    """{"size": bytes, "crc32": 8 hex digits} of a file, read in 16 MiB chunks; anything but a regular file is refused
    unopened (CheckpointError)."""
    kind = not_regular(path)
    if kind is not None:
        raise CheckpointError(f"{path} is {kind}, not a regular file: refusing to read it")
    crc, size = 0, 0
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while True:
            count = stream.readinto(buffer)
            if not count:
                break
            crc = zlib.crc32(view[:count], crc)
            size += count
    return {"size": size, "crc32": f"{crc & 0xFFFFFFFF:08x}"}


def checksums(folder: str, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {name: file_checksum(os.path.join(folder, name)) for name in sorted(set(names))}


def _write_json(path: str, value: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(folder: str, names: Iterable[str], known: dict[str, dict[str, Any]] | None = None) -> None:
    """Write `manifest.json` for the files `names` of `folder` (checksums in `known` are taken as they are)."""
    known = dict(known or {})
    files = {**checksums(folder, [n for n in names if n not in known]), **known}
    _write_json(os.path.join(folder, MANIFEST_FILE), {"format": 1, "checksum": "crc32", "files": files})


def finish_manifest(folder: str) -> None:
    """Merge the ranks' manifest parts, checksum whatever they do not cover (.metadata), write manifest.json."""
    known: dict[str, dict[str, Any]] = {}
    parts = [n for n in os.listdir(folder) if n.startswith("manifest_rank") and n.endswith(".part.json")]
    for name in parts:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            known.update(json.load(f))
    names = [n for n in os.listdir(folder) if n not in parts and n != MANIFEST_FILE and not n.endswith(".tmp")]
    write_manifest(folder, names, {k: v for k, v in known.items() if k in names})
    for name in parts:
        os.remove(os.path.join(folder, name))


class ManifestWriter(FileSystemWriter):
    """DCP's file writer that also checksums the files this rank wrote (while they are in the page cache) and the
    rank's `extra_files`, into a manifest part that `finish_manifest` merges (also in asynchronous saves)."""

    def __init__(self, path: str, rank: int, extra_files: Iterable[str] = ()) -> None:
        super().__init__(path)
        self.manifest_rank = rank
        self.extra_files = list(extra_files)

    def write_data(self, plan: Any, planner: Any) -> Any:
        try:
            future = super().write_data(plan, planner)
        except RuntimeError as error:
            # A full disk inside torch.save is its "unexpected pos ..." with the ENOSPC as __context__, which DCP's
            # gathering of the ranks' failures (pickled) drops: pass the OSError itself on.
            os_error = os_error_behind(error)
            if os_error is None:
                raise
            raise OSError(os_error.errno, os_error.strerror, os_error.filename or str(self.path)) from error
        results = future.wait()  # a torch Future, already done: FileSystemWriter has written everything
        folder = str(self.path)
        names = {str(r.storage_data.relative_path) for r in results} | set(self.extra_files)
        part = os.path.join(folder, MANIFEST_PART.format(rank=self.manifest_rank))
        _write_json(part, checksums(folder, names))
        return future


def os_error_behind(error: BaseException, seen: frozenset[int] = frozenset()) -> OSError | None:
    """The OSError behind a failed write, however wrapped (None: there is none): DCP's CheckpointException holds each
    rank's exception, and a disk filling up inside torch.save surfaces as its zip writer's "unexpected pos ..."
    RuntimeError with the ENOSPC only as that error's __context__."""
    if isinstance(error, OSError):
        return error
    seen = seen | {id(error)}
    inner = [failure[0] if isinstance(failure, tuple) else failure  # CheckpointException: {rank: (exception, tb)}
             for failure in getattr(error, "failures", {}).values()]
    for candidate in [*inner, error.__cause__, error.__context__]:
        if isinstance(candidate, BaseException) and id(candidate) not in seen:
            found = os_error_behind(candidate, seen)
            if found is not None:
                return found
    return None


def with_mark(state: dict[str, Any]) -> dict[str, Any]:
    """`state` to save with the mark saying that its checkpoint has a manifest (MANIFEST_MARK)."""
    return {**state, MANIFEST_MARK: MANIFEST_FORMAT}


def files_read(folder: str, metadata: Metadata) -> list[str]:
    """The files of checkpoint `folder` that readers use, each of which its manifest must cover: .metadata, the
    shards the metadata names, and the JSON files beside them (trainer states, frozen_base.json)."""
    shards = {str(getattr(info, "relative_path", "")) for info in (metadata.storage_data or {}).values()}
    beside = {n for n in os.listdir(folder) if n.endswith(".json") and n != MANIFEST_FILE
              and not (n.startswith("manifest_rank") and n.endswith(".part.json"))}
    return sorted({METADATA_FILE} | shards | beside)


def _problems(folder: str, files: dict[str, dict[str, Any]], names: list[str]) -> list[str]:
    problems = []
    for name in names:
        expected = files[name]
        if not isinstance(expected, dict) or not isinstance(expected.get("size"), int):
            problems.append(f"{MANIFEST_FILE} has no size for {name!r}")
            continue
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            problems.append(f"{name} is missing")
            continue
        size = os.path.getsize(path)
        if size != expected.get("size"):
            problems.append(f"{name} has {size} bytes, the manifest says {expected['size']}"
                            + (" (truncated)" if size < expected["size"] else ""))
            continue
        got = file_checksum(path)["crc32"]
        if got != expected.get("crc32"):
            problems.append(f"{name} has CRC-32 {got}, the manifest says {expected.get('crc32')} (its bytes changed)")
    return problems


def verify_checkpoint(folder: str, group: Any = None) -> bool:
    """Compare the files of checkpoint `folder` with its manifest; raise DamagedCheckpointError naming each file
    that is missing, of another size or with another checksum, or that the manifest has no entry for; and when the
    manifest itself is missing from a checkpoint whose .metadata carries MANIFEST_MARK. Returns False only for a
    checkpoint that predates manifests (no manifest, no mark: its files are not checksummed).

    Under torch.distributed every rank of `group` must call it: each checks a share of the files, and all agree.
    """
    folder = str(folder)
    manifest_path = os.path.join(folder, MANIFEST_FILE)
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
    rank, world = (dist.get_rank(group), dist.get_world_size(group)) if distributed else (0, 1)
    problems: list[str] = []
    files: dict[str, Any] | None = None
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as f:
                files = json.load(f)["files"]
            if not isinstance(files, dict):
                raise TypeError("'files' is not a mapping")
        except (ValueError, KeyError, TypeError) as error:
            problems.append(f"{MANIFEST_FILE} is unreadable ({error})")
            files = {}
        outside = [n for n in files if os.path.basename(n) != n or n in ("", ".", "..")]
        if outside:  # e.g. "/dev/zero" or "../x": never read anything outside the checkpoint folder
            raise UnsafeCheckpointError(
                f"refusing to read {manifest_path}: it names {outside[0]!r}, which is not a file of the checkpoint"
            )
        names = sorted(files)
        problems += _problems(folder, files, names[rank::world])
        problems += [f"{MANIFEST_FILE} has no entry for {name} (entries removed?)"
                     for name in files_read(folder, read_metadata(folder)) if name not in files]
    elif MANIFEST_MARK in read_metadata(folder).state_dict_metadata:
        problems.append(f"its {MANIFEST_FILE} is missing, but its .metadata says it was written with one (this "
                        "version writes a manifest into every checkpoint), so its files cannot be checked")
    if distributed:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, problems, group=group)
        problems = sorted({p for part in gathered for p in part})
    if problems:
        raise DamagedCheckpointError(f"checkpoint {folder} is damaged: " + "; ".join(problems))
    return files is not None
