"""Memory accounting of a training model: what its weights, gradients and optimizer state cost, before any step.

    report = model_memory(model)                       # a built model (any device, meta included)
    report = model_memory_from_config(config.model, ema=True)   # built on the meta device: no memory, no weights
    print(report.to_markdown())

Rules (PyTorch AdamW with FSDP2 or no sharding):
- a trainable parameter holds its weights, a gradient of the same dtype (FSDP2 keeps gradients in the sharded
  parameter's dtype) and `optimizer_states` tensors of the same dtype (AdamW: exp_avg, exp_avg_sq);
- a frozen parameter (requires_grad False) holds its weights only: no gradient, no optimizer state, and no fp32
  master copy when it is stored in bf16;
- an EMA (PowerEMA) keeps one fp32 copy of the trainable parameters (`ema=True`);
- buffers are counted apart; the tokenizer, which the diffusion models keep outside their module tree, is counted
  as frozen (it is on the GPU during the step).
Activations are not counted: they depend on the batch, the resolution and activation checkpointing, and are what a
GPU peak-memory measurement adds on top of these figures.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

GIB = 1024**3


@dataclass(frozen=True)
class MemoryReport:
    """Bytes (and parameter counts) of one model's persistent training state. All sizes are totals over ranks:
    divide by the number of FSDP shards for the per-GPU share of sharded networks."""

    trainable_parameters: int
    frozen_parameters: int
    trainable_parameter_bytes: int
    frozen_parameter_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    buffer_bytes: int
    tokenizer_bytes: int
    ema_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return (self.trainable_parameter_bytes + self.frozen_parameter_bytes + self.gradient_bytes
                + self.optimizer_state_bytes + self.buffer_bytes + self.tokenizer_bytes + self.ema_bytes)

    def as_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "total_bytes": self.total_bytes}

    def to_markdown(self, title: str = "model") -> str:
        """A two-column Markdown table in GiB."""
        rows = [
            ("trainable parameters", f"{self.trainable_parameters / 1e6:,.1f} M", self.trainable_parameter_bytes),
            ("frozen parameters", f"{self.frozen_parameters / 1e6:,.1f} M", self.frozen_parameter_bytes),
            ("gradients", "", self.gradient_bytes),
            ("optimizer state", "", self.optimizer_state_bytes),
            ("buffers", "", self.buffer_bytes),
            ("tokenizer (frozen)", "", self.tokenizer_bytes),
            ("EMA (fp32 copy of the trainable parameters)", "", self.ema_bytes),
            ("total (without activations)", "", self.total_bytes),
        ]
        lines = [f"| {title} | parameters | GiB |", "| --- | ---: | ---: |"]
        lines += [f"| {name} | {count} | {size / GIB:,.3f} |" for name, count, size in rows]
        return "\n".join(lines)


def _tensor_bytes(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> int:
    element_size = torch.empty((), dtype=dtype or tensor.dtype).element_size()
    return tensor.numel() * element_size


def model_memory(
    model: nn.Module,
    *,
    optimizer_states: int = 2,
    optimizer_state_dtype: torch.dtype | None = None,
    gradient_dtype: torch.dtype | None = None,
    ema: bool = False,
) -> MemoryReport:
    """Memory of `model`'s parameters, gradients and optimizer state.

    Args:
        model: any module; parameters with requires_grad are trainable, the rest frozen.
        optimizer_states: state tensors per trainable parameter (AdamW 2, SGD with momentum 1, SGD 0).
        optimizer_state_dtype / gradient_dtype: None = the parameter's own dtype (what PyTorch and FSDP2 do).
        ema: count an fp32 EMA copy of the trainable parameters.
    """
    if optimizer_states < 0:
        raise ValueError(f"model_memory: optimizer_states must be >= 0, got {optimizer_states}")
    trainable = frozen = trainable_bytes = frozen_bytes = gradient_bytes = optimizer_bytes = 0
    for parameter in model.parameters():  # shared parameters are listed once
        size = _tensor_bytes(parameter)
        if parameter.requires_grad:
            trainable += parameter.numel()
            trainable_bytes += size
            gradient_bytes += _tensor_bytes(parameter, gradient_dtype)
            optimizer_bytes += optimizer_states * _tensor_bytes(parameter, optimizer_state_dtype)
        else:
            frozen += parameter.numel()
            frozen_bytes += size
    buffer_bytes = sum(_tensor_bytes(b) for b in model.buffers())
    tokenizer = getattr(model, "tokenizer", None)
    tokenizer_bytes = 0
    if isinstance(tokenizer, nn.Module) and not any(tokenizer is m for m in model.modules()):
        tokenizer_bytes = sum(_tensor_bytes(t) for t in list(tokenizer.parameters()) + list(tokenizer.buffers()))
    return MemoryReport(
        trainable_parameters=trainable,
        frozen_parameters=frozen,
        trainable_parameter_bytes=trainable_bytes,
        frozen_parameter_bytes=frozen_bytes,
        gradient_bytes=gradient_bytes,
        optimizer_state_bytes=optimizer_bytes,
        buffer_bytes=buffer_bytes,
        tokenizer_bytes=tokenizer_bytes,
        ema_bytes=trainable * 4 if ema else 0,
    )


def model_memory_from_config(model_config: Any, *, optimizer_states: int = 2, ema: bool = False, lora: Any = None,
                             **instantiate_kwargs: Any) -> MemoryReport:
    """Build `model_config` (a LazyDict such as `config.model`) on the meta device and account its memory.

    Nothing is allocated and no weights are read, so this works for the 7B on any machine. Call-time kwargs replace
    config values (e.g. `tokenizer=` a light stand-in when the configured tokenizer reads files when built). `ema`
    (a run with `config.ema` set) counts an fp32 copy of the trainable parameters. `lora` (`config.lora`: a LoRA
    or its LazyDict) adds the adapters as the trainer does (fp32, trainable; their layers' weights frozen).
    """
    from cosmos_transfer.config.lazy import import_targets, instantiate

    import_targets(model_config)
    with torch.device("meta"):
        model = instantiate(model_config, **instantiate_kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_memory_from_config: the config built a {type(model).__name__}, not an nn.Module")
    if lora is not None:
        with torch.device("meta"):
            (instantiate(lora) if hasattr(lora, "keys") else lora).apply(model)
    return model_memory(model, optimizer_states=optimizer_states, ema=ema)


def main(argv: list[str] | None = None) -> int:
    """`python -m cosmos_transfer.memory [--config FILE] experiment=NAME [key=value ...]`: the memory table of that
    model, built on the meta device (nothing allocated, no weights read; run from the repository root, whose
    configs/train.py is the default --config, as for scripts/train.py)."""
    import argparse
    import sys

    from cosmos_transfer.config.compose import load_make_config, override

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", default=os.path.join("configs", "train.py"),
                        help="Python file defining make_config() (default: configs/train.py of this folder)")
    parser.add_argument("overrides", nargs="*", help="experiment=NAME and key=value overrides, as for train.py")
    args = parser.parse_args(argv)
    try:
        config = override(load_make_config(args.config)(), ["--", *args.overrides])
        report = model_memory_from_config(config.model, ema=config.ema is not None, lora=config.lora)
    except Exception as error:  # noqa: BLE001 - one clear line for any config or build error
        print(f"memory: cannot build the model of {' '.join(args.overrides) or 'the default config'} on the meta "
              f"device: {type(error).__name__}: {error} (a tokenizer that needs files can be replaced for the count, e.g. "
              "tokenizer=cosmos_cv8x8x8_random)", file=sys.stderr)
        return 1
    print(report.to_markdown(config.job.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
