"""The control spec: a JSON file in the spirit of Cosmos-Transfer1's `--controlnet_specs`.

    {
      "prompt": "A red ball rolls over a striped floor.",         (or "prompt_embedding": "prompt.safetensors")
      "negative_prompt": "blurry, low quality",                     (optional)
      "input_video_path": "input.mp4",
      "edge": {"control_weight": 1.0},                              (computed from the input video: Canny)
      "vis":  {"control_weight": "weights/vis_weight.mp4"},         (a spatio-temporal weight video)
      "depth": {"control_weight": 0.5, "input_control": "depth.mp4"}
    }

Hint keys are `edge`, `vis`, `depth`, `seg`, `keypoint` (or `control_input_<key>`). Per key:
- `control_weight`: a number (default 1.0) or a path to a weight video whose brightness (0..255 -> 0..1) weights
  the control per pixel and frame; it must have as many frames as the input video.
- `input_control`: a path to the control video; when absent, `edge` and `vis` are computed from the input video
  (the same code as training: cosmos_transfer/data/controls.py); the other keys need it.
Relative paths are taken from the current directory, as Cosmos does. Every mistake raises SpecError naming the file
and the entry.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from cosmos_transfer.config.errors import UserError
from cosmos_transfer.hints import HINT_KEYS, normalize_hint_key

COMPUTABLE_CONTROLS = ("edge", "vis")
_TOP_LEVEL_KEYS = ("prompt", "prompt_embedding", "negative_prompt", "negative_prompt_embedding", "input_video_path")
_CONTROL_KEYS = ("control_weight", "input_control")


class SpecError(UserError, ValueError):
    """A control spec that cannot be used; the message names the file and the entry."""


@dataclasses.dataclass(frozen=True)
class ControlSpec:
    key: str  # edge, vis, depth, seg, keypoint
    control_weight: float | str = 1.0  # a number, or the path of a weight video
    input_control: str | None = None  # path of the control video; None = computed from the input video

    @property
    def weight_is_map(self) -> bool:
        return isinstance(self.control_weight, str)


@dataclasses.dataclass(frozen=True)
class InferenceSpec:
    controls: dict[str, ControlSpec]
    input_video: str | None = None
    prompt: str | None = None
    prompt_embedding: str | None = None
    negative_prompt: str | None = None
    negative_prompt_embedding: str | None = None
    source: str = "spec"

    def replace(self, **changes: Any) -> "InferenceSpec":
        return dataclasses.replace(self, **changes)


def _hint_key(name: str, source: str) -> str | None:
    """'edge' / 'control_input_edge' -> 'edge'; None for a top-level key; SpecError for anything else."""
    if name in _TOP_LEVEL_KEYS:
        return None
    try:
        return normalize_hint_key(name)
    except ValueError:
        raise SpecError(
            f"{source}: unknown key {name!r}; expected a hint key ({', '.join(HINT_KEYS)}) or one of "
            f"{', '.join(_TOP_LEVEL_KEYS)}"
        ) from None


def _existing_file(path: Any, what: str, source: str) -> str:
    if not isinstance(path, str) or not path:
        raise SpecError(f"{source}: {what} must be a file path (a string), got {path!r}")
    if not os.path.isfile(path):
        raise SpecError(f"{source}: {what} {path!r} does not exist (relative paths are taken from {os.getcwd()})")
    return path


def _parse_control(key: str, entry: Any, source: str) -> ControlSpec:
    where = f"{source}: '{key}'"
    if not isinstance(entry, dict):
        raise SpecError(f"{where} must be an object such as {{\"control_weight\": 1.0}}, got {entry!r}")
    unknown = sorted(set(entry) - set(_CONTROL_KEYS))
    if unknown:
        raise SpecError(f"{where} has unknown entries {unknown}; expected {list(_CONTROL_KEYS)}")
    weight = entry.get("control_weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float, str)):
        raise SpecError(f"{where}: control_weight must be a number or the path of a weight video, got {weight!r}")
    if isinstance(weight, str):
        weight = _existing_file(weight, "control_weight video", where)
    elif not 0 <= weight < math.inf:  # JSON's NaN and Infinity (or 1e999) parse as floats
        raise SpecError(f"{where}: control_weight must be a finite number >= 0, got {weight}")
    input_control = entry.get("input_control")
    if input_control is not None:
        input_control = _existing_file(input_control, "input_control", where)
    elif key not in COMPUTABLE_CONTROLS:
        raise SpecError(
            f"{where} needs 'input_control' (a {key} video): only {' and '.join(COMPUTABLE_CONTROLS)} controls are "
            "computed from the input video"
        )
    return ControlSpec(key=key, control_weight=float(weight) if not isinstance(weight, str) else weight,
                       input_control=input_control)


def parse_spec(data: Any, source: str = "spec") -> InferenceSpec:
    """Check and convert a spec dict (the parsed JSON); `source` names it in error messages."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a JSON object at the top level, got {type(data).__name__}")
    controls: dict[str, ControlSpec] = {}
    for name, entry in data.items():
        key = _hint_key(name, source)
        if key is None:
            continue
        if key in controls:
            raise SpecError(f"{source}: hint key {key!r} is given twice")
        controls[key] = _parse_control(key, entry, source)
    if not controls:
        raise SpecError(
            f"{source}: no control given; add at least one hint key, e.g. \"edge\": {{\"control_weight\": 1.0}}"
        )
    for name in ("prompt", "negative_prompt"):
        if name in data and not isinstance(data[name], str):
            raise SpecError(f"{source}: '{name}' must be a string, got {data[name]!r}")
    if "prompt" in data and "prompt_embedding" in data:
        raise SpecError(f"{source}: give either 'prompt' or 'prompt_embedding', not both")
    input_video = data.get("input_video_path")
    if input_video is not None:
        input_video = _existing_file(input_video, "input_video_path", source)
    needs_input = [c.key for c in controls.values() if c.input_control is None]
    if needs_input and input_video is None:
        raise SpecError(
            f"{source}: control(s) {needs_input} are computed from the input video, but the spec has no "
            "'input_video_path'; add one or give each control an 'input_control'"
        )
    embeddings = {}
    for name in ("prompt_embedding", "negative_prompt_embedding"):
        if data.get(name) is not None:
            embeddings[name] = _existing_file(data[name], name, source)
    return InferenceSpec(
        controls=controls,
        input_video=input_video,
        prompt=data.get("prompt"),
        negative_prompt=data.get("negative_prompt"),
        source=source,
        **embeddings,
    )


def load_spec(path: str) -> InferenceSpec:
    """Read and check a spec JSON file."""
    if not os.path.isfile(path):
        raise SpecError(f"control spec {path!r} does not exist")
    with open(path, encoding="utf-8") as file:
        try:
            data = json.load(file)
        except json.JSONDecodeError as error:
            raise SpecError(f"{path}: not valid JSON: {error}") from error
        except RecursionError:
            raise SpecError(f"{path}: its JSON is nested too deeply to read (a spec is a flat object of controls)") \
                from None
    return parse_spec(data, source=path)
