"""Training checkpoints with torch.distributed.checkpoint (DCP), written so that a crash never leaves a bad one.

Layout of a job's checkpoint folder:

    checkpoints/
      iter_000001000/                 one complete checkpoint (only ever appears complete: see below)
        .metadata, __0_0.distcp, ...  DCP shards: "model.<param>", "optimizer.state.<param>.*", "ema.*" (each rank writes its own shards)
        trainer_state_rank0.json ...  one per rank: iteration, RNG states, data sampler state, scheduler, counters
        manifest.json                 size and CRC-32 of every other file (safe_dcp.py), checked before resuming
      latest_checkpoint.txt           the name of the newest complete checkpoint, e.g. "iter_000001000"
      referenced_by/<job hash>.json   {"checkpoint": "iter_...", "by": "<other job>/checkpoints"}: that job's lean
                                      checkpoints read their frozen base from this checkpoint; retention keeps it

A checkpoint is written into `iter_N.partial/`, renamed to `iter_N/` once every rank has written its part, and only
then is `latest_checkpoint.txt` replaced (write to a temp file, then an atomic rename). A run killed at any moment
leaves the previous checkpoint usable; leftover `.partial` folders are removed at the next start. Resuming checks the
latest checkpoint against its manifest and falls back to the newest intact one (the damaged ones are renamed
`iter_N.damaged`); checkpoints are read through safe_dcp.py, which never runs code from the files.

Per-rank state goes to JSON rather than into DCP: DCP treats equal keys on different ranks as one replicated value,
while RNG states differ per rank; JSON is also readable and safe to load.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fnmatch
import hashlib
import json
import os
import random
import shutil
import warnings
from concurrent.futures import Future
import re
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

from cosmos_transfer import lora
from cosmos_transfer.checkpoints import transfer1, transfer2_5
from cosmos_transfer.config.errors import UserError
from cosmos_transfer.trainer import frozen_base, safe_dcp
from cosmos_transfer.trainer.safe_dcp import CheckpointError, DamagedCheckpointError, ResumeError
from cosmos_transfer.trainer.shard_loading import copy_into_shards

LATEST_FILE = "latest_checkpoint.txt"
PARTIAL_SUFFIX = ".partial"


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:09d}"


# ----------------------------------------------------------------------------------------------------------------------
# RNG states as JSON


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and every CUDA device) RNG states of this process, JSON-serializable."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
    }
    if torch.cuda.is_available():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode("ascii") for s in torch.cuda.get_rng_state_all()]
    return state


def _bytes_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def restore_rng_state(state: dict[str, Any]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [_bytes_tensor(s) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ----------------------------------------------------------------------------------------------------------------------
# DCP adapters


class ModelState(Stateful):
    """Model weights as DCP state, through the FSDP2-aware get/set_model_state_dict (keys: parameter names).

    `leave_out`: keys not saved (nor expected when loading): the frozen base a lean checkpoint references
    (frozen_base.py)."""

    def __init__(self, model: nn.Module, leave_out: Iterable[str] = ()) -> None:
        self.model = model
        self.leave_out = set(leave_out)

    def state_dict(self) -> dict[str, Any]:
        state = get_model_state_dict(self.model)
        return {k: v for k, v in state.items() if k not in self.leave_out} if self.leave_out else state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # strict=False: the keys are those of the model's own state_dict() (which leaves out frozen encoders such as
        # the tokenizer), and DCP has already failed if the checkpoint lacked any of them.
        set_model_state_dict(self.model, state, options=StateDictOptions(strict=False))


class OptimizerState(Stateful):
    """Optimizer state as DCP state, keyed by parameter names (so it reshards across world sizes)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        state = get_optimizer_state_dict(self.model, self.optimizer)
        _add_never_stepped_states(self.model, state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_optimizer_state_dict(self.model, self.optimizer, state)


def _add_never_stepped_states(model: nn.Module, state: dict[str, Any]) -> None:
    """Give every optimized parameter without state (it never had a gradient: a layer the forward skipped) the state
    of a never-stepped one: zeros shaped as the others'. A resumed run's optimizer holds state for every parameter
    (DCP's loader initializes it all), so a checkpoint without these entries could not be loaded ("Missing key").
    Adam's zero moments and step 0 are what it starts from anyway, so resuming stays exact."""
    states = state["state"]
    if not states:
        return  # DCP initializes an optimizer that never stepped itself
    template = next(iter(states.values()))
    params = dict(model.named_parameters())
    for group in state["param_groups"]:
        for name in group["params"]:
            param = params.get(name)  # DCP's names are model.named_parameters()' (wrappers' prefixes removed)
            if name in states or param is None:
                continue
            entry = {}
            for key, value in template.items():
                if not isinstance(value, torch.Tensor):
                    entry[key] = type(value)()  # a number (0) or a flag's default
                elif value.ndim == 0:
                    entry[key] = torch.zeros_like(value)  # the step count
                else:
                    entry[key] = torch.zeros_like(param.detach(), dtype=value.dtype)
            states[name] = entry


class StatefulAdapter(Stateful):
    """Wraps any object with state_dict()/load_state_dict() (the EMA) so DCP loads into it in place."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def state_dict(self) -> dict[str, Any]:
        return self.obj.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.obj.load_state_dict(state)


# ----------------------------------------------------------------------------------------------------------------------
# The checkpointer


class Checkpointer:
    """Saves and finds training checkpoints in `directory`; every rank calls every method (they are collective).

    Args:
        directory: `<job dir>/checkpoints`.
        keep_last_k: keep this many newest checkpoints (older ones are deleted after a new one is complete);
            0 or less keeps all.
        async_save: write with `dcp.async_save` in a background thread; training continues while files are written.
            The checkpoint becomes "latest" once the write has finished (checked at each step and before the next
            save and at the end).
        say: where warnings go (rank 0 prints them).
    """

    def __init__(
        self, directory: str, keep_last_k: int = 3, async_save: bool = False, say: Callable[[str], None] | None = None
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.keep_last_k = int(keep_last_k)
        self.async_save = bool(async_save)
        self.rank = dist.get_rank()
        self._say = say or (lambda message: print(f"[cosmos_transfer] {message}", flush=True))
        self.world_size = dist.get_world_size()
        # Checkpoint collectives run on their own gloo group: an async save talks from a background thread while
        # training keeps using the default group, and gloo also serves CPU tensors under NCCL.
        self.group = dist.new_group(backend="gloo")
        self._pending: tuple[Future, str, str] | None = None
        self._said_held: set[str] = set()  # checkpoints retention keeps for another job, said once each
        if self.rank == 0:
            os.makedirs(self.directory, exist_ok=True)
            for name in os.listdir(self.directory):
                if name.endswith(PARTIAL_SUFFIX):  # an interrupted save from an earlier run
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        dist.barrier(group=self.group)

    def say(self, message: str) -> None:
        if self.rank == 0:
            self._say(message)

    # -- finding ------------------------------------------------------------------------------------------------------
    def latest(self) -> str | None:
        """Path of the checkpoint `latest_checkpoint.txt` names (not checked), or None when there is none."""
        name = read_latest_name(self.directory)
        return None if name is None else os.path.join(self.directory, name)

    def _older_checkpoints(self, than: str) -> list[str]:
        """Complete checkpoints of this folder older than `than`, newest first."""
        limit = _iteration_of(os.path.basename(than))
        names = [n for n in os.listdir(self.directory)
                 if _iteration_of(n) is not None and (limit is None or _iteration_of(n) < limit)]
        return [os.path.join(self.directory, n) for n in sorted(names, key=_iteration_of, reverse=True)]

    def check_intact(self, path: str) -> None:
        """Raise DamagedCheckpointError naming what is wrong with checkpoint `path` (collective)."""
        if not os.path.isdir(path):
            raise DamagedCheckpointError(f"checkpoint {path} is missing")
        if not safe_dcp.verify_checkpoint(path, group=self.group):
            self.say(f"{path} predates manifests (no {safe_dcp.MANIFEST_FILE}, and its .metadata has no mark of one): "
                     "only its file sizes are checked")
        # Whatever the manifest lists: every shard the metadata names must be there and long enough.
        safe_dcp.check_shard_files(path, safe_dcp.read_metadata(path))
        saved_world = self.saved_trainer_state(path).get("world_size", 1)
        for rank in range(1, saved_world if isinstance(saved_world, int) else 1):  # each rank wrote its own
            self.saved_trainer_state(path, rank)

    def resume_point(self) -> str | None:
        """The checkpoint to resume from: the latest one, or the newest intact good one before it (with a warning
        naming what is wrong with the ones passed over). None when the job has no checkpoint yet (collective)."""
        named = self.latest()
        if named is None:
            return None
        passed_over: list[str] = []
        for path in [named, *self._older_checkpoints(named)]:
            try:
                self.check_intact(path)
            except DamagedCheckpointError as error:
                passed_over.append(str(error))
                continue
            streak = int(self.saved_trainer_state(path).get("nan_streak", 0) or 0)
            if streak > 0:  # written by an older version after non-finite steps
                passed_over.append(f"checkpoint {path} was saved after {streak} non-finite steps")
                continue
            break
        else:
            raise DamagedCheckpointError(
                f"no intact checkpoint in {self.directory} to resume from: " + "; ".join(passed_over)
                + ". Restore the files from a copy, or move the folder away to start the job over"
            )
        if passed_over:
            self.say("WARNING: " + "; ".join(passed_over) + f"; resuming from the newest intact checkpoint {path}")
            if self.rank == 0:
                self._set_aside(named, keep=path)
                self._publish(os.path.basename(path))
            dist.barrier(group=self.group)
        return path

    def _set_aside(self, newest: str, keep: str) -> None:
        """Rename the damaged checkpoints after `keep` up to `newest` to `<name>.damaged` (kept for inspection, out
        of the way of pruning and of later saves)."""
        for name in os.listdir(self.directory):
            iteration = _iteration_of(name)
            newest_iteration = _iteration_of(os.path.basename(newest))
            if iteration is not None and _iteration_of(os.path.basename(keep)) < iteration and (
                newest_iteration is None or iteration <= newest_iteration
            ):
                target = os.path.join(self.directory, name + DAMAGED_SUFFIX)
                shutil.rmtree(target, ignore_errors=True)
                os.replace(os.path.join(self.directory, name), target)
                self.say(f"moved checkpoint {name} aside to {target}")

    # -- saving -------------------------------------------------------------------------------------------------------
    def save(self, iteration: int, app_state: dict[str, Any], rank_state: dict[str, Any],
             frozen: frozen_base.FrozenBase | None = None) -> None:
        """Write a checkpoint of `app_state` (DCP) and this rank's `rank_state` (JSON) for `iteration`; `frozen`
        references the frozen base that app_state leaves out (rank 0 writes it, frozen_base.py)."""
        self.wait()  # one save at a time
        name = checkpoint_name(iteration)
        final = os.path.join(self.directory, name)
        partial = final + PARTIAL_SUFFIX
        if self.rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        dist.barrier(group=self.group)
        state_file = f"trainer_state_rank{self.rank}.json"
        extra_files = [state_file] + ([frozen_base.FILE] if frozen is not None and self.rank == 0 else [])
        writer = safe_dcp.ManifestWriter(partial, self.rank, extra_files=extra_files)
        with _naming_write_errors(partial):
            os.makedirs(partial, exist_ok=True)
            with open(os.path.join(partial, state_file), "w", encoding="utf-8") as f:
                json.dump({**rank_state, "world_size": self.world_size, "rank": self.rank}, f)
            if frozen is not None and self.rank == 0:
                frozen_base.write(partial, frozen)
            app_state = safe_dcp.with_mark(app_state)  # its .metadata says that it has a manifest
            if self.async_save:
                future = dcp.async_save(app_state, storage_writer=writer, process_group=self.group)
                self._pending = (future, partial, final)
            else:
                dcp.save(app_state, storage_writer=writer, process_group=self.group)
                self._finalize(partial, final)

    def poll(self) -> None:
        """Finish an asynchronous save whose writes are done (cheap; call once per step)."""
        if self._pending is not None and self._pending[0].done():
            self.wait()

    def wait(self) -> None:
        """Block until a pending asynchronous save is complete and published."""
        if self._pending is None:
            return
        future, partial, final = self._pending
        self._pending = None
        with _naming_write_errors(partial):
            future.result()  # raises if the background write failed
            self._finalize(partial, final)

    def _finalize(self, partial: str, final: str) -> None:
        # When rank 0's DCP save returns, every rank's shards, manifest part and the metadata are on disk (DCP's
        # final step gathers all ranks' write results before rank 0 writes .metadata), so rank 0 can publish alone.
        if self.rank != 0:
            return
        safe_dcp.finish_manifest(partial)  # before the checkpoint can become "latest"
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(partial, final)
        self._publish(os.path.basename(final))
        self._prune(keep=os.path.basename(final))

    def _publish(self, name: str) -> None:
        """Point latest_checkpoint.txt at `name` (write a temp file, then an atomic rename)."""
        tmp = os.path.join(self.directory, LATEST_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.directory, LATEST_FILE))

    def _prune(self, keep: str) -> None:
        """Delete all but the newest keep_last_k checkpoints, never one that a reference names: `keep`, the one
        latest_checkpoint.txt names, or one whose job's lean checkpoints read their frozen base from it
        (`referenced_by/`, see `register_reference`)."""
        if self.keep_last_k <= 0:
            return
        names = sorted((n for n in os.listdir(self.directory) if _iteration_of(n) is not None), key=_iteration_of)
        older = names[: max(0, len(names) - self.keep_last_k)]
        if not older:
            return
        held, named = _held_by_other_jobs(self.directory), (keep, read_latest_name(self.directory))
        for name in older:
            if name in named:
                continue
            if name in held:
                if name not in self._said_held:
                    self._said_held.add(name)
                    self.say(f"keeping {name} beyond checkpoint.keep_last_k={self.keep_last_k}: the lean checkpoints "
                             f"of {', '.join(held[name])} read their frozen base from it (noted in "
                             f"{os.path.join(self.directory, REFERENCES_FOLDER)}); it goes once that job is deleted")
                continue
            shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def register_reference(self, base: str) -> str | None:
        """Note in the checkpoints folder holding `base` (when it is a checkpoint, of any job) that this job's lean
        checkpoints read their frozen base from it, so that its job's retention keeps it. Returns why that failed
        (None: noted, or nothing to note); all ranks agree (rank 0 writes)."""
        return _rank0_agreed(lambda: _write_reference(base, self.directory), self.group)

    # -- loading ------------------------------------------------------------------------------------------------------
    @staticmethod
    def saved_trainer_state(path: str, rank: int = 0) -> dict[str, Any]:
        """A rank's trainer state in checkpoint `path` (iteration, settings to check before loading, ...)."""
        file = os.path.join(path, f"trainer_state_rank{rank}.json")
        if not os.path.isfile(file):
            raise DamagedCheckpointError(f"checkpoint {path} is damaged: trainer_state_rank{rank}.json is missing")
        try:
            with open(file, encoding="utf-8") as f:
                state = json.load(f)
        except (ValueError, UnicodeDecodeError) as error:
            raise DamagedCheckpointError(f"{file} is damaged: not valid JSON ({error}); truncated?") from None
        if not isinstance(state, dict) or not isinstance(state.get("iteration"), int):
            raise DamagedCheckpointError(f"{file} is damaged: it holds no trainer state (no integer 'iteration')")
        return state

    def check_resumable(self, path: str, states: dict[str, Stateful]) -> None:
        """Raise ResumeError when checkpoint `path` holds other tensors than `states` (this run's model and EMA, the
        lean checkpoint's frozen base left out) would load: names and shapes, both ways (a tensor only the checkpoint
        has would be dropped from the job without a word)."""
        stored = safe_dcp.read_metadata(path).state_dict_metadata
        lacking, shapes, extra = [], [], []
        for prefix, state in states.items():
            own = {f"{prefix}.{k}": v for k, v in state.state_dict().items()}
            for key, value in own.items():
                saved = stored.get(key)
                if saved is None:
                    lacking.append(key)
                elif isinstance(value, torch.Tensor) and tuple(getattr(saved, "size", value.shape)) != value.shape:
                    shapes.append(f"{key}: the checkpoint {tuple(saved.size)}, this run {tuple(value.shape)}")
            extra += [k for k in stored if k.startswith(f"{prefix}.") and k not in own]
        if not (lacking or shapes or extra):
            return
        # The EMA's shadows (ema.shadow.<name>) repeat what the model's tensors say: name the model's when it has any.
        lacking, shapes, extra = ([k for k in keys if k.startswith("model.")] or keys
                                  for keys in (lacking, shapes, extra))

        def listed(keys: list[str]) -> str:
            names = [k.split(".", 1)[1] for k in sorted(keys)]
            return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")

        found = []
        if shapes:
            found.append(f"{len(shapes)} tensors have another shape ("
                         + "; ".join(s.split(".", 1)[1] for s in shapes[:3]) + ("; ..." if len(shapes) > 3 else "")
                         + ": another model size?)")
        if lacking:
            found.append(f"this run has {len(lacking)} tensors the checkpoint lacks ({listed(lacking)})")
        if extra:
            found.append(f"the checkpoint has {len(extra)} tensors this run lacks ({listed(extra)})")
        raise ResumeError(
            f"cannot resume from {path}: it holds another model than this run builds: " + "; ".join(found) + ". The "
            "job was saved with other settings (model size, hint keys, experiment, LoRA targets, EMA). Resume with "
            "the settings it was saved with, or start a new job (another job.name, or move "
            f"{self.directory} away); to go on from its weights with the new settings, export them "
            "(scripts/export_checkpoint.py) and set checkpoint.load_path to that file"
        )

    def load(self, path: str, app_state: dict[str, Any]) -> dict[str, Any]:
        """Load `app_state` in place from checkpoint `path`; return this rank's trainer state.

        With the same world size each rank gets its own saved state (RNG, sampler); with a different one every rank
        gets rank 0's, marked `"resharded": True` so the caller can decide what still applies.
        """
        try:
            safe_dcp.load(app_state, path, process_group=self.group)
        except (safe_dcp.UnsafeCheckpointError, DamagedCheckpointError):
            raise
        # DCP names the tensor; say which checkpoint and what to do. (CheckpointException is a BaseException.)
        except (Exception, CheckpointException) as error:
            raise RuntimeError(
                f"cannot resume from {path}: it could not be loaded into this run's model, optimizer or EMA "
                f"({_first_line(error)}). If the experiment or an override changed since it was saved, resume with the "
                "settings it was saved with, or start a new job (another job.name, or move this job's checkpoints/ "
                "folder away)"
            ) from error
        state = self.saved_trainer_state(path)
        own = os.path.join(path, f"trainer_state_rank{self.rank}.json")
        if state.get("world_size") == self.world_size and os.path.isfile(own):
            state = self.saved_trainer_state(path, self.rank)
            state["resharded"] = False
        else:
            state["resharded"] = True
        return state


_CHECKPOINT_NAME = re.compile(r"iter_(\d+)")
DAMAGED_SUFFIX = ".damaged"
REFERENCES_FOLDER = "referenced_by"


def _write_reference(base: str, by: str) -> str | None:
    """Checkpoint `base` is the frozen base of the lean checkpoints in job folder `by` (its checkpoints/): note it in
    `<base's folder>/referenced_by/<hash of by>.json` (one file per referencing job: no two jobs write the same).
    Returns why it could not be written; None when noted or when `base` is no checkpoint (nothing prunes it)."""
    folder, name = os.path.split(os.path.realpath(base))
    if _iteration_of(name) is None:
        return None
    registry = os.path.join(folder, REFERENCES_FOLDER)
    entry = os.path.join(registry, hashlib.sha256(os.path.realpath(by).encode()).hexdigest()[:16] + ".json")
    try:
        os.makedirs(registry, exist_ok=True)
        with open(entry + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"checkpoint": name, "by": os.path.realpath(by)}, f)
        os.replace(entry + ".tmp", entry)
    except OSError as error:
        return f"cannot note the reference in {registry} ({error.strerror or error})"
    return None


def _still_references(by: str, checkpoint: str) -> bool:
    """Whether the job whose checkpoints folder is `by` still reads its frozen base from `checkpoint`: it exists and
    has no checkpoint yet (just started), or one of its checkpoints references it (or cannot be read: kept)."""
    if not os.path.isdir(by):
        return False
    names = [n for n in os.listdir(by) if _iteration_of(n) is not None]
    for name in names:
        try:
            base = frozen_base.read(os.path.join(by, name))
        except DamagedCheckpointError:
            return True
        if base is not None and os.path.realpath(base.path) == checkpoint:
            return True
    return not names


def _held_by_other_jobs(directory: str) -> dict[str, list[str]]:
    """{checkpoint name: the checkpoints folders of the jobs whose lean checkpoints reference it} for checkpoints
    folder `directory`; notes of jobs that were deleted or no longer reference it are removed."""
    registry = os.path.join(directory, REFERENCES_FOLDER)
    held: dict[str, list[str]] = {}
    for entry in sorted(os.listdir(registry)) if os.path.isdir(registry) else []:
        path = os.path.join(registry, entry)
        try:
            with open(path, encoding="utf-8") as f:
                note = json.load(f)
            name, by = str(note["checkpoint"]), str(note["by"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a note (a .tmp being written, a stray file): names nothing
        if _still_references(by, os.path.join(os.path.realpath(directory), name)):
            held.setdefault(name, []).append(by)
        else:
            os.remove(path)
    return held


def _iteration_of(name: str) -> int | None:
    """The iteration of a checkpoint folder name `iter_<N>`; None for anything else (.partial, .damaged, files)."""
    match = _CHECKPOINT_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def read_latest_name(directory: str) -> str | None:
    """The checkpoint name in `<directory>/latest_checkpoint.txt` (None without the file); it must name a folder
    inside `directory`, never a path that leaves it."""
    path = os.path.join(directory, LATEST_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        name = f.read().strip()
    if not name or name in (".", "..") or os.path.basename(name) != name or "\\" in name or "/" in name:
        raise CheckpointError(
            f"{path} names {name!r}, which is not a checkpoint folder inside {directory}: it must hold the name of one "
            "of that folder's iter_* checkpoints (e.g. iter_000001000). Fix the file, or delete it to start over"
        )
    return name


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written (a full disk, a quota, permissions); the message names the folder and, for a
    full disk, its free space. `errno` is the OS error's."""


@contextlib.contextmanager
def _naming_write_errors(partial: str) -> Iterator[None]:
    """An OS error while writing a checkpoint (a full disk, a quota, permissions) named with the path, also from
    inside DCP's wrapping; the previous checkpoint stays the latest."""
    try:
        yield
    except (Exception, CheckpointException) as error:  # CheckpointException is a BaseException
        os_error = safe_dcp.os_error_behind(error)
        if os_error is None:
            raise
        where = os_error.filename or partial
        message = f"cannot write checkpoint {partial}: {os_error.strerror or os_error} ({where})"
        if os_error.errno in (errno.ENOSPC, errno.EDQUOT):
            usage = shutil.disk_usage(os.path.dirname(partial))
            message += (
                f". The disk holding {os.path.dirname(partial)} is full ({usage.free / 1e9:.1f} GB free of "
                f"{usage.total / 1e9:.1f} GB): free space there, lower checkpoint.keep_last_k, or put the job on a "
                "larger disk (OUTPUT_ROOT)"
            )
        failed = CheckpointWriteError(message + ". The previous checkpoint is still the latest")
        failed.errno = os_error.errno
        raise failed from error


# ----------------------------------------------------------------------------------------------------------------------
# Initializing a model from load_path (weights only)


def _first_line(error: BaseException) -> str:
    """The first line of what an exception says, found through DCP's wrapping (CheckpointException holds the
    per-rank failures in its message)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    mismatch = [line for line in lines if "mismatch" in line.lower()]
    return (mismatch or lines or [type(error).__name__])[0]


def _read_weights_file(path: str, model_keys: Iterable[str], use_ema: bool, lazy: bool = False
                       ) -> tuple[dict[str, torch.Tensor], str]:
    """Weights for the model from a file of ours or NVIDIA's (any layout of checkpoints/transfer1.py, or for a
    Cosmos-2.5 model checkpoints/transfer2_5.py), and a line saying what the file held. An official branch goes to
    the model's one branch; a model with branches that the file lacks gets them started from the file's base, as
    NVIDIA starts a branch (model_ctrl.py build_model)."""
    model_keys = set(model_keys)
    if transfer2_5.is_cosmos_2p5(model_keys):  # a Cosmos-2.5 model: NVIDIA's 2.5 layout (net.* is the network)
        return transfer2_5.model_weights(path, model_keys)
    net_keys = [k[len(transfer1.NET):] for k in model_keys if k.startswith(transfer1.NET)]
    found = transfer1.read_weights(path, use_ema=use_ema, net_keys=net_keys, lazy=lazy)
    branches = sorted({k.split(".")[1] for k in model_keys if k.startswith(transfer1.CONTROL) and k.count(".") >= 2})
    if found.official_branch is not None:
        if len(branches) != 1:
            raise CheckpointError(
                f"checkpoint.load_path={path} holds a control branch ({transfer1.LAYOUTS[found.layout]}), but the "
                "model "
                f"has {'no branch' if not branches else 'the branches ' + str(branches)}: "
                + ("use a control experiment (model ControlDiffusionModel)" if not branches else
                   "convert the files into one of ours, naming each branch: scripts/convert_checkpoint.py to-ours "
                   "base_model.pt out.safetensors --control KEY=KEY_control.pt ...")
            )
        weights = found.ours(branches[0])
    else:
        weights = found.ours()
    needs_base = any(k.startswith(transfer1.NET) for k in model_keys)
    if needs_base and not found.has_base:
        raise CheckpointError(
            f"checkpoint.load_path={path} holds only a control branch ({transfer1.LAYOUTS[found.layout]}), but the "
            "model needs its base too: combine them into one file with scripts/convert_checkpoint.py to-ours "
            f"base_model.pt out.safetensors --control KEY={path} (inference: --checkpoint base_model.pt "
            f"--control_checkpoint KEY={path})"
        )
    description = found.describe()
    absent = [b for b in branches if not any(k.startswith(f"{transfer1.CONTROL}{b}.") for k in weights)]
    if absent and found.has_base:
        for branch in absent:
            blocks = {int(m.group(1)) for k in model_keys
                      if (m := re.match(rf"{re.escape(transfer1.CONTROL + branch)}\.blocks\.block(\d+)\.", k))}
            weights.update(transfer1.branch_from_base(weights, [branch], max(blocks, default=-1) + 1, clone=False))
        description += f"; branches {absent} started from its base"
    return weights, description


def _check_keys(
    path: str, model_keys: Iterable[str], file_keys: Iterable[str], strict: bool, allowed_missing: list[str],
    hint: str = "",
) -> list[str]:
    """Keys of the model the file provides; raises on missing/unexpected keys that strict loading forbids."""
    model_keys, file_keys = set(model_keys), set(file_keys)
    missing = sorted(k for k in model_keys - file_keys if not any(fnmatch.fnmatch(k, p) for p in allowed_missing))
    unexpected = sorted(file_keys - model_keys)
    if not model_keys & file_keys:
        raise CheckpointError(
            f"checkpoint.load_path={path}: none of its {len(file_keys)} keys match the model's {len(model_keys)} "
            f"keys (file: {sorted(file_keys)[:3]}..., model: {sorted(model_keys)[:3]}...)."
        )
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"checkpoint.load_path={path} does not match the model: {len(missing)} missing keys {missing[:8]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:8]}. "
            + (hint or "Allow missing keys (e.g. a fresh control branch) with checkpoint.allowed_missing_keys="
               "['net_ctrl.*'], or set checkpoint.strict_load=false.")
        )
    return sorted(model_keys & file_keys)


def _branch_hint(missing: Iterable[str]) -> str:
    """What to do when a file lacks the branches' own layers (it holds a base only)."""
    from cosmos_transfer.networks.dit_ctrl import BRANCH_OWN_LAYERS, NEW_BRANCH_KEY_PATTERNS

    own = sorted({k.split(".")[1] for k in missing if k.startswith(transfer1.CONTROL) and k.count(".") >= 2
                  and k.split(".")[2] in BRANCH_OWN_LAYERS})
    if not own:
        return ""
    return (
        f"The file holds no trained layers of the branches {own} ({', '.join(BRANCH_OWN_LAYERS)}). For a trained "
        "branch, load its control file too (inference: --control_checkpoint KEY=KEY_control.pt; training: "
        "scripts/convert_checkpoint.py to-ours base_model.pt out.safetensors --control KEY=KEY_control.pt); to start "
        f"new branches from the base, allow them: checkpoint.allowed_missing_keys={list(NEW_BRANCH_KEY_PATTERNS)}."
    )


def _check_load_path(path: str) -> None:
    """checkpoint.load_path exists and is a file or a folder: a FIFO or a device is refused without opening it."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint.load_path={path} does not exist")
    problem = None if os.path.isdir(path) else frozen_base.source_problem(path)
    if problem is not None:
        raise CheckpointError(f"checkpoint.load_path={problem}")


def load_model_weights(
    model: nn.Module,
    path: str,
    *,
    strict: bool = True,
    allowed_missing_keys: Iterable[str] = (),
    use_ema: bool = False,
    report: Callable[[str], None] | None = None,
) -> list[str]:
    """Initialize `model` (possibly FSDP2-sharded) from `path`; returns the loaded keys.

    `path` is one of: one of our DCP checkpoints (a folder with `.metadata`: its `model.*` weights, or `ema.*` with
    `use_ema`), a `.safetensors` file (see scripts/export_checkpoint.py), or a `.pt` file of ours or NVIDIA's in any
    layout of checkpoints/transfer1.py (read with weights_only=True; `report` gets a line saying which layout).
    Weights only: no optimizer, no iteration. Every rank calls this.
    """
    allowed_missing = list(allowed_missing_keys)
    _check_load_path(path)
    # A model with LoRA adapters meets files under its layers' base names (lora.py); its adapters keep their start.
    model_state, model_names = lora.base_view(get_model_state_dict(model))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, ".metadata")):
            raise CheckpointError(f"checkpoint.load_path={path} is a folder but not a DCP checkpoint (no .metadata)")
        safe_dcp.verify_checkpoint(path)  # its manifest (required unless it predates manifests)
        stored = safe_dcp.read_metadata(path).state_dict_metadata
        file_keys = [k[len("model.") :] for k in stored if k.startswith("model.")]
        base = frozen_base.read(path)
        if base is not None:  # a lean checkpoint: its frozen base first, from the source it references
            file_keys += load_frozen_base(model, base, path)
        if lora.has_adapters(file_keys):
            raise CheckpointError(
                f"checkpoint.load_path={path} holds LoRA adapters: resume its job instead, or export it with "
                "scripts/export_checkpoint.py (--lora merged) and load that file"
            )
        keys = _check_keys(path, model_state, file_keys, strict, allowed_missing)
        # (a lean checkpoint's frozen base is already in place: only what the folder holds is read from it)
        to_load = {f"model.{k}": model_state[k] for k in keys if f"model.{k}" in stored}
        if use_ema:  # trainable parameters from the EMA's shadow ("ema.shadow.<name>", fp32), the rest from the model
            for k in keys:
                if f"ema.shadow.{k}" in stored:
                    to_load[f"ema.shadow.{k}"] = to_load.pop(f"model.{k}")
        safe_dcp.load(to_load, path)
        loaded = {k.split(".", 2)[-1] if k.startswith("ema.shadow.") else k[len("model.") :]: v
                  for k, v in to_load.items()}
        set_model_state_dict(model, {model_names[k]: v for k, v in loaded.items()},
                             options=StateDictOptions(strict=False))
        return [model_names[k] for k in keys]
    # Nothing is read whole: each rank copies its rows of each tensor into its shard (trainer/shard_loading.py).
    weights, description = _read_weights_file(path, model_state, use_ema, lazy=True)
    if report is not None:
        report(description)
    missing = set(model_state) - set(weights)
    keys = _check_keys(path, model_state, weights, strict, allowed_missing, _branch_hint(missing))
    copy_into_shards(model_state, weights, keys, path)
    return [model_names[k] for k in keys]  # the model's own names (a LoRA layer's `.base_layer.` included)


# ----------------------------------------------------------------------------------------------------------------------
# Lean checkpoints: the frozen base read again from its source (frozen_base.py)


def _rank0_agreed(compute: Callable[[], Any], group: Any = None) -> Any:
    """What `compute()` returns on rank 0 of `group` (the only rank that reads the bytes), on every rank; what it
    raises is raised on every rank (no rank is left waiting for the others)."""
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
    if not distributed:
        return compute()
    found: list[Any] = [None]
    if dist.get_rank(group) == 0:
        try:
            found = [(compute(), None)]
        except Exception as error:  # noqa: BLE001 (re-raised on every rank below, bugs included)
            found = [(None, error)]
    dist.broadcast_object_list(found, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
    value, error = found[0]
    if error is not None:
        raise error
    return value


def load_fingerprinted(model: nn.Module, path: str, **options: Any) -> tuple[list[str], tuple[int, str]]:
    """load_model_weights(model, path, **options) and the (bytes, CRC-32) of the bytes it read: what a lean checkpoint
    records of its frozen base (frozen_base.py). Rank 0 takes the fingerprint just before the read and checks after
    it that the source is still the same file, unmodified (stat: device, inode, size, mtime); all ranks agree."""
    _check_load_path(path)  # on every rank, before rank 0 opens it
    before = _rank0_agreed(lambda: (frozen_base.stat_signature(path), frozen_base.fingerprint(path)))
    keys = load_model_weights(model, path, **options)
    if _rank0_agreed(lambda: frozen_base.stat_signature(path)) != before[0]:
        raise frozen_base.FrozenBaseError(
            f"checkpoint.load_path={path} changed while it was read (replaced or written to): the weights read may "
            "mix two versions. Run again once nothing writes that file")
    return keys, before[1]


def frozen_base_problem(base: frozen_base.FrozenBase, checkpoint: str, group: Any = None) -> str | None:
    """frozen_base.problem, computed once (rank 0 reads the source's bytes) and agreed by all ranks of `group`."""
    return _rank0_agreed(lambda: frozen_base.problem(base, checkpoint), group)


def load_frozen_base(model: nn.Module, base: frozen_base.FrozenBase, checkpoint: str, group: Any = None) -> list[str]:
    """Read the frozen base that lean checkpoint `checkpoint` references into `model` (each rank its rows), as the
    run that saved it read it; returns the keys. Raises naming the source if it changed or vanished."""
    problem = frozen_base_problem(base, checkpoint, group)
    if problem is not None:
        raise frozen_base.FrozenBaseError(problem)
    load_model_weights(model, base.path, strict=base.strict, allowed_missing_keys=base.allowed_missing_keys,
                       use_ema=base.use_ema)
    return list(base.keys)



def read_frozen_base(checkpoint: str) -> dict[str, torch.Tensor]:
    """The frozen base that lean checkpoint `checkpoint` references, read whole from its source (one process: export);
    {} for a checkpoint that holds all its weights. Raises naming the source if it changed or vanished."""
    base = frozen_base.read(checkpoint)
    if base is None:
        return {}
    problem = frozen_base.problem(base, checkpoint)
    if problem is not None:
        raise frozen_base.FrozenBaseError(problem)
    names = {k: lora.base_name(k) for k in base.keys}  # a LoRA run's frozen layers have their base names in files
    if os.path.isdir(base.path):  # another DCP checkpoint (itself lean or not)
        stored = safe_dcp.read_metadata(base.path).state_dict_metadata
        weights = read_frozen_base(base.path)
        template = {f"model.{n}": torch.empty(stored[f"model.{n}"].size, dtype=stored[f"model.{n}"].properties.dtype)
                    for n in names.values() if f"model.{n}" in stored}
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            safe_dcp.load(template, base.path, no_dist=True)
        weights.update({k[len("model."):]: v for k, v in template.items()})
    else:
        weights, _ = _read_weights_file(base.path, names.values(), base.use_ema)
    absent = [k for k, n in names.items() if n not in weights]
    if absent:
        raise frozen_base.FrozenBaseError(f"{base.path}, the frozen base of {checkpoint}, lacks {len(absent)} of its "
                                          f"tensors: {absent[:5]}")
    out, seen = {}, set()
    for key, name in names.items():  # a branch started from the base shares its tensors: files may not share storage
        value = weights[name]
        out[key] = value.clone() if id(value) in seen else value
        seen.add(id(value))
    return out
