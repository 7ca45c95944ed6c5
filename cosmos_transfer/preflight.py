"""Checks a training run makes right after composing, before anything large is built or read.

    problems = check_run(config, world_size=1, local_world_size=1, device_type="cpu")
    if problems:
        raise PreflightError(problems)          # one message listing every problem

What is checked (each cheap: file-system look-ups and a model built on the meta device, which allocates nothing):
- paths: `checkpoint.load_path` (when the job has no checkpoint to resume from), the files of a tokenizer that reads
  them (Cosmos' folder, the 2.5 family's Wan2.1 VAE tokenizer.pth), each dataset root
  (`dataloader_{train,val}.dataset.root`), its `videos/` folder and its text-embedding folder; each hint names the
  model family's own files and commands (Transfer1's base_model.pt and T5-XXL, Transfer2.5's released files and
  Cosmos-Reason1);
- memory: the model's weights, gradients, optimizer state and EMA (cosmos_transfer.memory) against the GPU's memory
  (FSDP2 divides the networks by the number of ranks) and against the host's available memory (every rank builds
  the whole model in host memory before moving it to its device, or with checkpoint.load_path only its shard);
- world size: `trainer.fsdp_shard_size` divides it, there is a GPU for every local rank, every rank gets a batch;
- buckets (`data_train=custom_buckets`): a well-formed list whose batches in flight fit in the host's memory;
- text embeddings projected offline (prepare_dataset.py --project-with): by checkpoint.load_path's crossattn_proj;
- context parallelism: `trainer.context_parallel_size` divides the ranks, every network's attention heads and every
  loader's latent frames (Ulysses splits both), each refusal naming the sizes or clip lengths that would work.

Activations are not counted (they come on top), so a run refused here could never have run; one that passes may
still run out of memory later (docs/TRAINING.md, troubleshooting).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from cosmos_transfer.config.errors import UserError
from cosmos_transfer.memory import GIB, MemoryReport, model_memory
from cosmos_transfer.tokenizers.base import VideoTokenizer

# Tokenizer configs with one of these keys read released files when built: Cosmos' folder (encoder.jit, decoder.jit,
# mean_std.pt) or the Wan2.1 VAE's tokenizer.pth of the 2.5 family.
TOKENIZER_FILES_KEY = "checkpoint_dir"
WAN_FILE_KEY = "checkpoint_path"
# (spatial, temporal) compression of a file-reading tokenizer whose config does not say it, by class name.
_STAND_IN_COMPRESSION = {"WanVAETokenizer": (8, 4)}


class PreflightError(UserError, ValueError):
    """Every problem the checks found, in one message."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = [f"{len(problems)} problem(s) found before building anything:"]
        lines += [f"  {i}. {problem}" for i, problem in enumerate(problems, 1)]
        super().__init__("\n".join(lines))


def _get(node: Any, dotted: str, default: Any = None) -> Any:
    """node.a.b.c for attrs sections and OmegaConf/LazyDict nodes alike; `default` when any part is missing."""
    for part in dotted.split("."):
        if node is None:
            return default
        try:
            node = node[part] if hasattr(node, "keys") else getattr(node, part)
        except (KeyError, AttributeError, TypeError, ValueError):
            return default
        except Exception:  # noqa: BLE001 - an interpolation that cannot resolve: reported by the build itself
            return default
    return default if node is None else node


def job_checkpoint(config: Any) -> str | None:
    """The job's `checkpoints/latest_checkpoint.txt` when it exists (the run then resumes instead of loading)."""
    path = os.path.join(str(config.job.path), "checkpoints", "latest_checkpoint.txt")
    return path if os.path.isfile(path) else None


def count_videos(root: str) -> int:
    folder = os.path.join(root, "videos")
    return sum(1 for name in os.listdir(folder) if name.endswith(".mp4")) if os.path.isdir(folder) else 0


def _class_name(node: Any) -> str:
    return str(_get(node, "_target_", "")).rsplit(".", 1)[-1]


def _reads_files(tokenizer: Any) -> bool:
    """Whether a tokenizer config reads released files when built (Cosmos' folder, the Wan2.1 VAE's file)."""
    return tokenizer is not None and hasattr(tokenizer, "keys") and bool(_get(tokenizer, "load_weights", True)) \
        and (TOKENIZER_FILES_KEY in tokenizer or WAN_FILE_KEY in tokenizer)


def check_tokenizer_files(config: Any) -> list[str]:
    """The files of a tokenizer that reads released ones exist: Cosmos' folder (encoder.jit, decoder.jit,
    mean_std.pt), or the Wan2.1 VAE's tokenizer.pth of the 2.5 family."""
    tokenizer = _get(config, "model.tokenizer")
    if not _reads_files(tokenizer):
        return []
    try:
        if TOKENIZER_FILES_KEY in tokenizer:
            from cosmos_transfer.tokenizers.files import resolve_checkpoint_dir

            resolve_checkpoint_dir(_get(tokenizer, TOKENIZER_FILES_KEY), "model.tokenizer")
        else:
            from cosmos_transfer.tokenizers.wan import WanVAETokenizer

            WanVAETokenizer._checkpoint_file(_get(tokenizer, WAN_FILE_KEY))
    except FileNotFoundError as error:
        return [str(error)]
    return []


def is_cosmos_2p5(config: Any) -> bool:
    """Whether the model is of the Cosmos-2.5 family (Transfer2.5 / Predict2.5 nets), whose files, text encoder and
    tokenizer differ from Transfer1's: every hint below names the family's own."""
    return _class_name(_get(config, "model.net")).startswith("Cosmos25")


def _load_path_hint(config: Any) -> str:
    if is_cosmos_2p5(config):
        return ("expected a .safetensors/.pt file or another job's iter_* folder: a released Transfer2.5 file is the "
                "load path as it is, e.g. checkpoints/nvidia/Cosmos-Transfer2.5-2B/general/edge/<uuid>_ema_bf16.pt "
                "(Predict2.5: checkpoints/nvidia/Cosmos-Predict2.5-2B/base/post-trained/<uuid>_ema_bf16.pt), and "
                "a joint model's file is made by scripts/convert_checkpoint.py to-ours <edge file> joint.safetensors "
                "--control edge=<edge file> --control vis=<blur file> ...; docs/TRAINING.md, \"Cosmos-Transfer2.5-2B "
                "control branches\", step 1")
    return ("expected a .safetensors/.pt file or another job's iter_* folder: scripts/convert_checkpoint.py to-ours "
            "base_model.pt <out>.safetensors --new-control <key> converts Cosmos-Transfer1-7B's base_model.pt into "
            "one; docs/TRAINING.md, \"Post-training a control branch from the official Cosmos-Transfer1-7B "
            "weights\", step 1")


# Text-embedding folders -> how scripts/prepare_dataset.py writes them (the encoder, and the extra it needs).
_TEXT_ENCODER_HINTS = {
    "t5_xxl": "--text_encoder checkpoints/google-t5/t5-11b (T5-XXL, Transfer1's text encoder: pip install -e '.[t5]')",
    "reason1": "--text_encoder checkpoints/nvidia/Cosmos-Reason1-7B (Cosmos-Reason1, the 2.5 family's text "
               "encoder: pip install -e '.[reason1]')",
    "reason1_projected": "--text_encoder checkpoints/nvidia/Cosmos-Reason1-7B --project-with <the base's file> "
                         "(Cosmos-Reason1 through the base's crossattn_proj: pip install -e '.[reason1]')",
    "minilm_l6": "--text_encoder minilm (the demo's all-MiniLM-L6-v2)",
}


def _text_encoder_hint(folder: str, cosmos_2p5: bool) -> str:
    default = "reason1" if cosmos_2p5 else "t5_xxl"
    return _TEXT_ENCODER_HINTS.get(folder, _TEXT_ENCODER_HINTS[default])


def check_paths(config: Any) -> list[str]:
    problems = []
    cosmos_2p5 = is_cosmos_2p5(config)
    load_path = str(_get(config, "checkpoint.load_path", "") or "")
    if load_path and job_checkpoint(config) is None and not os.path.exists(load_path):
        problems.append(f"checkpoint.load_path {load_path!r} does not exist ({_load_path_hint(config)})")
    problems += check_tokenizer_files(config)
    layout = "videos/, captions/ and Cosmos-Reason1 embeddings (docs/DATASETS.md, \"The Cosmos-2.5 family\")" \
        if cosmos_2p5 else "videos/, metas/ and text embeddings (docs/DATASETS.md)"
    for loader in ("dataloader_train", "dataloader_val"):
        dataset = _get(config, f"{loader}.dataset")
        root = _get(dataset, "root")
        if root is None:
            continue
        root = str(root)
        if not os.path.isdir(root):
            problems.append(f"{loader}.dataset.root {root!r} does not exist (a folder with {layout})")
            continue
        if not os.path.isdir(os.path.join(root, "videos")):
            problems.append(f"{loader}.dataset.root {root!r} has no videos/ folder (layout: docs/DATASETS.md)")
        embeddings = _get(dataset, "text_embedding_folder")
        if embeddings and not os.path.isdir(os.path.join(root, str(embeddings))):
            problems.append(
                f"{loader}.dataset: text-embedding folder {os.path.join(root, str(embeddings))!r} does not exist "
                f"(compute it with scripts/prepare_dataset.py {root} "
                f"{_text_encoder_hint(str(embeddings), cosmos_2p5)}, or set {loader}.dataset.text_embedding_folder)"
            )
    return problems


class _ShapeOnlyTokenizer(VideoTokenizer):
    """Stands in for a tokenizer whose files are missing, so that the model can be built for the memory count and
    its frame arithmetic (chunks included: VideoTokenizer's) used by the context-parallel check."""

    def __init__(self, latent_channels: int, spatial_compression: int, temporal_compression: int,
                 pixel_chunk_duration: int | None = None) -> None:
        super().__init__(latent_channels=latent_channels, spatial_compression=spatial_compression,
                         temporal_compression=temporal_compression,  # no chunk length given: one chunk, however long
                         pixel_chunk_duration=pixel_chunk_duration or 1 + temporal_compression * 10**6)

    def _encode_chunk(self, video: torch.Tensor) -> torch.Tensor:  # the model is only counted, never run
        raise RuntimeError(
            "preflight's shape-only tokenizer stands in for a tokenizer whose files are missing: it counts memory "
            "and cannot encode or decode; download the tokenizer (docs/TRAINING.md) to run the model"
        )

    _decode_chunk = _encode_chunk
    encode = decode = _encode_chunk


def meta_model(config: Any) -> tuple[nn.Module | None, str]:
    """(the model built on the meta device, a note on what stands in for it) or (None, why it could not be built)."""
    from cosmos_transfer.config.lazy import import_targets, instantiate

    model_config = config.model
    kwargs: dict[str, Any] = {}
    note = ""
    tokenizer = _get(model_config, "tokenizer")
    try:
        if _reads_files(tokenizer):
            channels = _get(tokenizer, "latent_channels") or _get(model_config, "net.out_channels", 16)
            spatial, temporal = _STAND_IN_COMPRESSION.get(_class_name(tokenizer), (8, 8))
            kwargs["tokenizer"] = _ShapeOnlyTokenizer(int(channels),
                                                      int(_get(tokenizer, "spatial_compression", spatial)),
                                                      int(_get(tokenizer, "temporal_compression", temporal)),
                                                      _get(tokenizer, "pixel_chunk_duration"))
            note = " (the tokenizer's own weights not counted)"
        elif tokenizer is not None and hasattr(tokenizer, "keys"):  # no files, no weights (pixel, DCT): built for
            kwargs["tokenizer"] = instantiate(tokenizer)  # real, as the trainer does (its checks need real numbers)
        import_targets(model_config)
        with torch.device("meta"):
            model = instantiate(model_config, **kwargs)
    except Exception as error:  # noqa: BLE001 - the real build reports it with its own message
        return None, f"{type(error).__name__}: {error}"
    return model, note


def estimate_memory(config: Any, model: nn.Module | None = None, note: str = "") -> tuple[MemoryReport | None, str]:
    """(the model's memory report built on the meta device, a note) or (None, why it could not be built);
    `model`: one meta_model built already."""
    if model is None:
        model, note = meta_model(config)
        if model is None:
            return None, note
    optimizer_states = 0 if "SGD" in str(_get(config, "optimizer._target_", "")) else 2
    return model_memory(model, optimizer_states=optimizer_states, ema=config.ema is not None), note


def host_available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), else None (not checked)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def gpu_names() -> str:
    """The CUDA devices this process sees, named (`cuda:0..7 NVIDIA H100 80GB HBM3`): what a message about the GPU
    refers to; "no CUDA device" without one."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = [torch.cuda.get_device_name(i) for i in range(count)]
    if not names:
        return "no CUDA device"
    if len(set(names)) == 1:
        return f"cuda:0{f'..{count - 1}' if count > 1 else ''} {names[0]}"
    return ", ".join(f"cuda:{i} {name}" for i, name in enumerate(names))


def memory_problems(report: MemoryReport, note: str, *, world_size: int, local_world_size: int, device_type: str,
                    device_bytes: int | None, host_bytes: int | None, sharded_build: bool = False,
                    device_name: str = "the GPU", smaller: str = "demo_edge_tiny or ctrl_tiny") -> list[str]:
    """The model's persistent state against the device (per rank) and the host (all local ranks). `sharded_build`:
    the trainer builds the model on the meta device and each rank holds only its shard (checkpoint.load_path).
    `device_name`: which GPU the figures are of; `smaller`: the family's CPU-sized experiments."""
    gib = lambda n: f"{n / GIB:,.1f} GiB"  # noqa: E731
    figures = (f"{report.trainable_parameters / 1e6:,.1f} M trainable and {report.frozen_parameters / 1e6:,.1f} M "
               f"frozen parameters: weights, gradients, optimizer state and EMA {gib(report.total_bytes)}{note}, "
               "activations not counted")
    more = "more GPUs (torchrun --nproc_per_node=N: FSDP2 divides the networks' share by N)" if device_type == \
        "cuda" else "a machine with GPUs (docs/TRAINING.md: FSDP2 divides the networks' share by their number)"
    options = (f"Options: {more}; a smaller experiment (e.g. experiment={smaller} on a CPU); "
               "CPU offload of the training state does not exist in this trainer (inference has --offload for the "
               "tokenizer)")
    problems = []
    sharded = report.total_bytes - report.tokenizer_bytes
    per_rank = sharded / max(world_size, 1) + report.tokenizer_bytes
    if device_type == "cuda" and device_bytes:
        if per_rank > device_bytes:
            problems.append(f"the model needs {gib(per_rank)} per GPU on {world_size} GPU(s), {device_name} has "
                            f"{gib(device_bytes)} ({figures}). {options}")
    # Without load_path every rank builds the whole model in host memory before moving it (CPU training: it stays
    # there); with it each rank materializes only its shard (trainer/shard_loading.py).
    weights = report.trainable_parameter_bytes + report.frozen_parameter_bytes + report.buffer_bytes
    if sharded_build:
        weights /= max(world_size, 1)
    weights += report.tokenizer_bytes
    host_need = local_world_size * (weights if device_type == "cuda" else per_rank)
    if host_bytes is not None and host_need > host_bytes:
        where = ("to load each rank's shard before moving it to its GPU" if sharded_build else
                 "to build the model on each rank before moving it to its GPU") if device_type == "cuda" else \
            "to train on the CPU"
        problems.append(f"the model needs {gib(host_need)} of host memory {where} ({local_world_size} local "
                        f"rank(s)); this machine has {gib(host_bytes)} available ({figures}). {options}")
    return problems


def inference_memory_problems(config: Any, *, device_type: str, half_precision: bool) -> list[str]:
    """The model's weights for generation (no gradients or optimizer state) against the host, where it is built and
    loaded, and the GPU, where it runs (in bf16 when `half_precision`)."""
    report, note = estimate_memory(config)
    if report is None:
        return []
    gib = lambda n: f"{n / GIB:,.1f} GiB"  # noqa: E731
    stored = report.trainable_parameter_bytes + report.frozen_parameter_bytes + report.buffer_bytes \
        + report.tokenizer_bytes
    parameters = report.trainable_parameters + report.frozen_parameters
    figures = f"{parameters / 1e6:,.1f} M parameters{note}, activations not counted"
    problems = []
    host = host_available_bytes()
    if host is not None and stored > host:
        problems.append(f"the model's weights need {gib(stored)} of host memory to build and load, this machine has "
                        f"{gib(host)} available ({figures}); use a machine with more memory or a smaller experiment")
    if device_type == "cuda" and torch.cuda.device_count():
        on_gpu = parameters * 2 + report.buffer_bytes + report.tokenizer_bytes if half_precision else stored
        gpu = torch.cuda.get_device_properties(0).total_memory
        if on_gpu > gpu:
            problems.append(f"the model needs {gib(on_gpu)} on the GPU (cuda:0 {torch.cuda.get_device_name(0)}), "
                            f"which has {gib(gpu)} ({figures}); "
                            "--offload keeps the tokenizer on the CPU between its calls; or a GPU with more memory")
    return problems


def _smallest_batch(config: Any) -> tuple[int, str]:
    """The smallest batch a rank takes, and what sets it: dataloader_train.batch_size, or with buckets (which ignore
    that setting) the smallest bucket's own batch."""
    buckets = _get(config, "dataloader_train.dataset.buckets")
    if buckets is None:
        return int(_get(config, "dataloader_train.batch_size", 1) or 1), ""
    from cosmos_transfer.data.buckets import parse_buckets

    try:
        return min(bucket.batch_size for bucket in parse_buckets(list(buckets))), " (the smallest bucket batch)"
    except (TypeError, ValueError):  # malformed: bucket_problems names it
        return 1, ""


def world_size_problems(config: Any, *, world_size: int, local_world_size: int, device_type: str,
                        cuda_devices: int) -> list[str]:
    problems = []
    shard = int(_get(config, "trainer.fsdp_shard_size", 0) or 0)
    if 0 < shard < world_size and world_size % shard:
        problems.append(f"trainer.fsdp_shard_size={shard} must divide the number of ranks ({world_size})")
    if device_type == "cuda" and local_world_size > cuda_devices:
        problems.append(f"{local_world_size} processes per node but {cuda_devices} GPU(s) on this node "
                        f"({gpu_names()}): set torchrun --nproc_per_node to at most {cuda_devices}")
    root = _get(config, "dataloader_train.dataset.root")
    batch, setting = _smallest_batch(config)
    if root is not None and os.path.isdir(os.path.join(str(root), "videos")):
        clips = count_videos(str(root))
        if 0 < clips < world_size * batch:
            problems.append(f"{clips} clip(s) in {root} for {world_size} rank(s) x batch {batch}{setting}: every "
                            "rank needs at least one batch; add clips, or use fewer ranks or a smaller batch")
    return problems


def bucket_problems(config: Any, *, local_world_size: int) -> list[str]:
    """A bucket list (data_train=custom_buckets) that is malformed, or whose batches would not fit in host memory
    (cosmos_transfer/data/buckets.py)."""
    buckets = _get(config, "dataloader_train.dataset.buckets")
    if buckets is None:
        return []
    from cosmos_transfer.data.buckets import bucket_memory_problems

    hint_keys = _get(config, "dataloader_train.dataset.hint_keys") or []
    return bucket_memory_problems(list(buckets), len(hint_keys),
                                  num_workers=int(_get(config, "dataloader_train.num_workers", 0) or 0),
                                  prefetch_factor=_get(config, "dataloader_train.prefetch_factor"),
                                  local_world_size=local_world_size, host_bytes=host_available_bytes())


def text_projection_problems(config: Any) -> list[str]:
    """Text embeddings projected offline by another base's crossattn_proj than checkpoint.load_path's
    (cosmos_transfer/data/text_embeddings.py projection_mismatch)."""
    load_path = str(_get(config, "checkpoint.load_path", "") or "")
    if not os.path.isfile(load_path):
        return []
    from cosmos_transfer.data.text_embeddings import projection_mismatch

    folders = []  # validation reads the training folder unless it has its own
    for loader in ("dataloader_train", "dataloader_val"):
        root, folder = _get(config, f"{loader}.dataset.root"), _get(config, f"{loader}.dataset.text_embedding_folder")
        if root is not None and folder and os.path.join(str(root), str(folder)) not in folders:
            folders.append(os.path.join(str(root), str(folder)))
    return [problem for problem in (projection_mismatch(folder, load_path) for folder in folders) if problem]
def _clip_lengths(config: Any) -> dict[str, list[int]]:
    """Each loader's clip lengths in pixel frames: its dataset's num_frames, or its buckets' lengths."""
    from cosmos_transfer.data.buckets import parse_buckets

    lengths = {}
    for loader in ("dataloader_train", "dataloader_val"):
        dataset = _get(config, f"{loader}.dataset")
        buckets, num_frames = _get(dataset, "buckets"), _get(dataset, "num_frames")
        try:
            frames = sorted({b.num_frames for b in parse_buckets(list(buckets))}) if buckets is not None else \
                [int(num_frames)] if num_frames is not None else []
        except (TypeError, ValueError):  # malformed: the dataset reports it with its own message
            frames = []
        if frames:
            lengths[f"{loader}.dataset." + ("buckets" if buckets is not None else "num_frames")] = frames
    return lengths


def _lengths_that_split(tokenizer: Any, num_frames: int, unit: int) -> list[int]:
    """Pixel clip lengths near `num_frames` whose latent frames are a multiple of `unit` (the two below, the two
    above)."""
    latent = tokenizer.latent_num_frames(num_frames)
    below = [latent // unit * unit - unit * k for k in (1, 0)]
    above = [(latent // unit + k) * unit for k in (1, 2)]
    return [tokenizer.pixel_num_frames(m) for m in below + above if m >= unit]


def context_parallel_problems(config: Any, model: nn.Module | None, *, world_size: int) -> list[str]:
    """trainer.context_parallel_size against the ranks, the networks' attention heads and the clips' token frames
    (Ulysses attention splits the heads and the token frames over the group: trainer/context_parallel.py); each
    refusal names what would work. `model`: built on the meta device (None: only the ranks are checked)."""
    cp = int(_get(config, "trainer.context_parallel_size", 1) or 1)
    if cp == 1:
        return []
    setting = f"trainer.context_parallel_size={cp}"
    problems = []
    if world_size % cp:
        problems.append(f"{setting} must divide the number of ranks ({world_size}): each group of {cp} ranks shares "
                        f"one sample; run a multiple of {cp} ranks (torchrun --nproc_per_node) or set "
                        f"{setting.split('=')[0]} to a divisor of {world_size}")
    shard = int(_get(config, "trainer.fsdp_shard_size", 0) or 0)
    if shard:
        problems.append(f"{setting} with trainer.fsdp_shard_size={shard}: context parallelism shards FSDP2 over all "
                        "ranks; set trainer.fsdp_shard_size=0 (HSDP with context parallelism is not built)")
    if model is None:
        return problems
    from cosmos_transfer.trainer.parallelize import find_networks

    networks = find_networks(model)
    for name, net in networks:
        heads = int(getattr(net, "num_heads", 0) or 0)
        if heads and heads % cp:
            sizes = [n for n in range(2, heads + 1) if heads % n == 0 and world_size % n == 0]
            problems.append(f"{setting}: {name or 'the network'} has {heads} attention heads, which do not split over "
                            f"{cp} ranks (each rank attends with heads/{cp} heads); sizes that split them over "
                            f"{world_size} rank(s): {sizes or 'none but 1'}")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not networks:
        return problems
    unit = cp * max(int(getattr(net, "patch_temporal", 1) or 1) for _, net in networks)
    for key, lengths in _clip_lengths(config).items():
        for num_frames in lengths:
            try:
                latent = tokenizer.latent_num_frames(num_frames)
            except ValueError as error:  # a length the tokenizer cannot take: its own message says which it can
                problems.append(f"{key}: {error}")
                continue
            if latent % unit:
                working = ", ".join(str(n) for n in _lengths_that_split(tokenizer, num_frames, unit))
                problems.append(
                    f"{key}: clips of {num_frames} frames are {latent} latent frames, which do not split over the "
                    f"{cp} ranks of {setting} (it needs a multiple of {unit} latent frames); lengths that split: "
                    f"{working} frames (set {key}, or another context_parallel_size)")
    return problems


def check_run(config: Any, *, world_size: int, local_world_size: int, device_type: str) -> list[str]:
    """Every problem found, as one sentence each (empty: go ahead)."""
    problems = check_paths(config)
    problems += bucket_problems(config, local_world_size=local_world_size)
    problems += text_projection_problems(config)
    cuda_devices = torch.cuda.device_count() if device_type == "cuda" else 0
    problems += world_size_problems(config, world_size=world_size, local_world_size=local_world_size,
                                    device_type=device_type, cuda_devices=cuda_devices)
    model, note = meta_model(config) if _get(config, "model") is not None else (None, "")
    problems += context_parallel_problems(config, model, world_size=world_size)
    if model is not None:
        report, note = estimate_memory(config, model, note)
        if report is not None:
            device_bytes = torch.cuda.get_device_properties(0).total_memory if cuda_devices else None
            problems += memory_problems(report, note, world_size=world_size, local_world_size=local_world_size,
                                        device_type=device_type, device_bytes=device_bytes,
                                        host_bytes=host_available_bytes(),
                                        sharded_build=bool(_get(config, "checkpoint.load_path", "")),
                                        device_name=f"each GPU ({gpu_names()})" if cuda_devices else "the GPU",
                                        smaller="transfer2p5_tiny" if is_cosmos_2p5(config) else
                                        "demo_edge_tiny or ctrl_tiny")
    return problems
