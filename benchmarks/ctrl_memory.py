"""Memory of 7B control post-training: the accounting (any machine) and the peak of one real step (CUDA).

    python benchmarks/ctrl_memory.py                    # accounting table of ctrl_7b_edge_posttrain (meta device)
    python benchmarks/ctrl_memory.py --measure          # + one training step on the GPU: peak allocated memory
    python benchmarks/ctrl_memory.py --measure --tiny   # the same code path on ctrl_tiny (CPU check of this script)
    python benchmarks/ctrl_memory.py --measure --size transfer2p5_2b     # Transfer2.5-2B edge, 93 frames 1280 x 704

The step is the trainer's: the model built from the experiment (random weights, frozen bf16 base), parallelized by
`trainer/parallelize.py` (FSDP2 over one process, bf16 compute, activation checkpointing "full"), AdamW (fused on
CUDA) and one optimizer step, at 121 frames 1280 x 704 (latent 16 x 16 x 88 x 160, given as `latent`), the edge
hint encoded inside the step, T5-sized text (512 x 1024). The tokenizer is `cosmos_cv8x8x8_random` (the released one
needs its files); the EMA's fp32 copy is not built and is added from the accounting. There is no peer to compare
with: Cosmos-Transfer1 needs 8 x 80 GB GPUs for this (its issues #35, #81); the goal is one 80 GB GPU.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.train import make_config  # noqa: E402
from cosmos_transfer.config.compose import override  # noqa: E402
from cosmos_transfer.config.lazy import instantiate  # noqa: E402
from cosmos_transfer.memory import GIB, model_memory, model_memory_from_config  # noqa: E402

SIZES = {  # experiment, frames, height, width, text length, text width
    "7b": ("ctrl_7b_edge_posttrain", 121, 704, 1280, 512, 1024),
    "tiny": ("ctrl_tiny", 5, 32, 32, 40, 384),
    "transfer2p5_2b": ("transfer2p5_2b_edge_posttrain", 93, 704, 1280, 512, 100352),  # NVIDIA's 93 x 704 x 1280
}
# The released tokenizers need their files: the same networks with random weights stand in (memory is the same).
RANDOM_TOKENIZERS = {"7b": "cosmos_cv8x8x8_random", "transfer2p5_2b": "wan2pt1_random"}


def measure_step(config, frames: int, height: int, width: int, text_length: int, text_dim: int) -> dict:
    from cosmos_transfer.trainer.distributed import init_distributed
    from cosmos_transfer.trainer.parallelize import parallelize

    device = init_distributed()
    cuda = device.type == "cuda"
    with torch.device(device):
        model = instantiate(config.model)
    parallelize(model, device=device, activation_checkpointing="full",
                param_dtype=torch.bfloat16 if cuda else None, reduce_dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5, fused=cuda)
    tokenizer = model.tokenizer
    latent_shape = (1, tokenizer.latent_channels, tokenizer.latent_num_frames(frames),
                    height // tokenizer.spatial_compression, width // tokenizer.spatial_compression)
    batch = {
        "latent": torch.randn(latent_shape, device=device),
        "control_input_edge": torch.randint(0, 256, (1, 3, frames, height, width), dtype=torch.uint8, device=device),
        "padding_mask": torch.zeros(1, 1, height, width, device=device),
        "fps": torch.tensor([24.0], device=device),
        "image_size": torch.tensor([[height, width, height, width]], dtype=torch.float32, device=device),
        "t5_text_embeddings": torch.randn(1, text_length, text_dim, device=device),
        "t5_text_mask": torch.ones(1, text_length, device=device),
    }
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loss, _ = model.training_step(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / GIB if cuda else float("nan")
    reserved = torch.cuda.max_memory_reserved() / GIB if cuda else float("nan")
    report = model_memory(model)
    return dict(device=torch.cuda.get_device_name() if cuda else "cpu", seconds=seconds, peak_gib=peak,
                reserved_gib=reserved, loss=float(loss.detach()), state_gib=report.total_bytes / GIB)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", action="store_true", help="run one training step and report its peak memory")
    parser.add_argument("--size", choices=list(SIZES), default="7b", help="which experiment (default: the 7B)")
    parser.add_argument("--tiny", action="store_true", help="the tiny control experiment (= --size tiny)")
    args = parser.parse_args(argv)
    size = "tiny" if args.tiny else args.size
    name, frames, height, width, text_length, text_dim = SIZES[size]
    overrides = ["--", f"experiment={name}"] + ([f"tokenizer={RANDOM_TOKENIZERS[size]}"] if size in RANDOM_TOKENIZERS
                                                 else [])
    config = override(make_config(), overrides)

    report = model_memory_from_config(config.model, ema=config.ema is not None)
    print(f"# {name}, {datetime.date.today()}: persistent training state (meta-device accounting)\n")
    print(report.to_markdown(name))
    if not args.measure:
        return 0
    result = measure_step(config, frames, height, width, text_length, text_dim)
    ema = report.ema_bytes / GIB
    print(f"\n# one training step, {frames} frames {width} x {height}, activation checkpointing full\n")
    print("| device | step s | peak allocated GiB | peak reserved GiB | + EMA GiB (not built) | loss |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {result['device']} | {result['seconds']:.2f} | {result['peak_gib']:.2f} | {result['reserved_gib']:.2f} "
          f"| {ema:.2f} | {result['loss']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
