"""Context parallelism on 2 gloo ranks, launched by tests/integration/test_context_parallel.py under torchrun.

    torchrun --nproc_per_node=2 tests/context_parallel_run.py equality OUT.json t1_base,t1_ctrl,v25_base,v25_ctrl
        each model family's training step with its tokens split over the 2 ranks (alone, and under FSDP2 on the
        dp x cp mesh with full activation checkpointing) against the same step on one rank, unsplit: loss and
        every gradient, written to OUT.json
    torchrun --nproc_per_node=2 tests/context_parallel_run.py train '{"job_dir": ..., "max_iter": 3, "cp": 2}'
        the trainer with trainer.context_parallel_size on a tiny GeneralDIT model (also runs on one process)
"""

from __future__ import annotations

import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from cosmos_transfer.config.lazy import LazyCall as L  # noqa: E402
from cosmos_transfer.config.schema import CheckpointConfig, Config, JobConfig, TrainerConfig  # noqa: E402
from cosmos_transfer.data.sampler import build_dataloader  # noqa: E402
from cosmos_transfer.diffusion.conditioner import VideoConditioner  # noqa: E402
from cosmos_transfer.diffusion.model import DiffusionModel  # noqa: E402
from cosmos_transfer.diffusion.model_ctrl import ControlDiffusionModel  # noqa: E402
from cosmos_transfer.networks.dit import GeneralDIT  # noqa: E402
from cosmos_transfer.networks.dit_ctrl import GeneralDITControl  # noqa: E402
from cosmos_transfer.networks.dit_v2_5 import Cosmos25DiT  # noqa: E402
from cosmos_transfer.networks.dit_v2_5_control import Cosmos25ControlDiT  # noqa: E402
from cosmos_transfer.tokenizers.pixel import PixelTokenizer  # noqa: E402
from cosmos_transfer.trainer.context_parallel import ContextParallel, apply_context_parallel  # noqa: E402
from cosmos_transfer.trainer.parallelize import parallelize  # noqa: E402

# Latents of the pixel tokenizer (s=2): 12 channels; 4 frames of 8x8 pixels -> 4 token frames of 2x2 tokens.
ARCH = dict(max_img_h=16, max_img_w=16, max_frames=8, in_channels=12, out_channels=12, model_channels=32,
            num_heads=2, num_blocks=2, crossattn_emb_channels=8, adaln_lora_dim=8)


def make_model(kind: str) -> torch.nn.Module:
    tokenizer = PixelTokenizer(spatial_compression=2)
    if kind == "t1_base":
        return DiffusionModel(GeneralDIT(**ARCH), tokenizer, VideoConditioner())
    if kind == "t1_ctrl":
        branch = GeneralDITControl(num_control_blocks=2, hint_channels=12, **ARCH)
        return ControlDiffusionModel(GeneralDIT(**ARCH), tokenizer, VideoConditioner(), net_ctrl=branch,
                                     hint_keys=("edge",))
    from cosmos_transfer.diffusion.model_v2_5 import Cosmos25Model

    if kind == "v25_base":  # video2world: per-frame timesteps and a condition mask, both split
        return Cosmos25Model(Cosmos25DiT(**ARCH), tokenizer, VideoConditioner())
    if kind == "v25_ctrl":
        net = Cosmos25ControlDiT(vace_block_every_n=1, num_max_modalities=1, **ARCH)
        return Cosmos25Model(net, tokenizer, VideoConditioner(), hint_keys=("edge",))
    raise ValueError(kind)


def randomize_(model: torch.nn.Module) -> None:
    """Random weights everywhere (the official inits zero the AdaLN outputs and control layers: no path would count)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


def make_batch(frames: int = 4, size: int = 8, batch_size: int = 2) -> dict:
    g = torch.Generator().manual_seed(3)

    def video():
        return torch.randint(0, 256, (batch_size, 3, frames, size, size), generator=g, dtype=torch.uint8)

    return {"video": video(), "control_input_edge": video(), "padding_mask": torch.zeros(batch_size, 1, size, size),
            "fps": torch.full((batch_size,), 24.0),
            "image_size": torch.tensor([[size] * 4] * batch_size, dtype=torch.float32),
            "t5_text_embeddings": torch.randn(batch_size, 5, 8, generator=g), "t5_text_mask": torch.ones(batch_size, 5)}


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).clone()
            for name, p in model.named_parameters() if p.grad is not None}


def training_step(model: torch.nn.Module) -> float:
    torch.manual_seed(11)  # the same noise, sigma and conditioning frames for the split and the unsplit step
    loss, _ = model.training_step(make_batch())
    loss.backward()
    return loss.item()


def equality(out_path: str, kinds: str) -> None:
    dist.init_process_group("gloo")
    cp = ContextParallel.build(2, torch.device("cpu"))
    results = {}
    for kind in kinds.split(","):
        for fsdp in (False, True):
            torch.manual_seed(0)
            model = make_model(kind)
            randomize_(model)
            reference = copy.deepcopy(model)
            reference_loss = training_step(reference)
            reference_grads = gradients(reference)
            apply_context_parallel(model, cp)
            if fsdp:  # with full activation checkpointing: the recomputed attention repeats its all-to-alls
                parallelize(model, device=torch.device("cpu"), mesh=cp.fsdp_mesh(), activation_checkpointing="full")
            loss = training_step(model)
            if not fsdp:  # what FSDP2's reduce-scatter does: the mean over the ranks
                for p in model.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad, group=cp.group)
                        p.grad /= cp.size
            grads = gradients(model)
            worst = max(((grads[n] - g).abs().max() / g.abs().max()).item() for n, g in reference_grads.items())
            results[f"{kind}/{'fsdp' if fsdp else 'plain'}"] = dict(
                loss=loss, reference_loss=reference_loss, worst_relative_gradient_error=worst,
                same_names=sorted(grads) == sorted(reference_grads), num_gradients=len(grads),
                num_nonzero=sum(int(g.abs().max() > 0) for g in reference_grads.values()))
    if dist.get_rank() == 0:
        with open(out_path, "w") as file:
            json.dump(results, file, indent=1)
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ the trainer
class SyntheticClips(Dataset):
    """Clips in the batch contract (docs/ARCHITECTURE.md), each a function of its index."""

    def __init__(self, length: int = 8, frames: int = 4, size: int = 8) -> None:
        self.length, self.frames, self.size = length, frames, size

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key):
        index = int(key[1]) if isinstance(key, (tuple, list)) else int(key)
        g = torch.Generator().manual_seed(index)
        s = self.size
        return {"video": torch.randint(0, 256, (3, self.frames, s, s), generator=g, dtype=torch.uint8),
                "padding_mask": torch.zeros(1, s, s), "fps": torch.tensor(24.0),
                "image_size": torch.tensor([s, s, s, s], dtype=torch.float32), "num_frames": torch.tensor(self.frames),
                "t5_text_embeddings": torch.randn(5, 8, generator=g), "t5_text_mask": torch.ones(5),
                "caption": f"clip {index}", "sample_index": torch.tensor(index), "num_skipped": torch.tensor(0)}


def synthetic_loader(rank=None, world_size=None):
    return build_dataloader(SyntheticClips(), batch_size=2, seed=1, rank=rank, world_size=world_size)


def train(options: dict) -> None:
    from cosmos_transfer.trainer import trainer as trainer_module

    path = os.path.abspath(options["job_dir"])
    os.environ["OUTPUT_ROOT"] = os.path.dirname(os.path.dirname(os.path.dirname(path)))
    config = Config(
        job=JobConfig(project=os.path.basename(os.path.dirname(os.path.dirname(path))),
                      group=os.path.basename(os.path.dirname(path)), name=os.path.basename(path)),
        model=L(DiffusionModel)(net=L(GeneralDIT)(**ARCH), tokenizer=L(PixelTokenizer)(spatial_compression=2),
                                conditioner=L(VideoConditioner)()),
        optimizer=L(torch.optim.AdamW)(lr=1e-3),
        scheduler=None,
        ema=None,
        dataloader_train=L(synthetic_loader)(),
        dataloader_val=None,
        trainer=TrainerConfig(max_iter=options["max_iter"], logging_iter=1, seed=5, progress_bar=False,
                              tensorboard=False, validation_samples=False, context_parallel_size=options.get("cp", 1)),
        checkpoint=CheckpointConfig(save_iter=options.get("save_iter", 0)),
    )
    trainer_module.train(config)


if __name__ == "__main__":
    if sys.argv[1] == "equality":
        equality(sys.argv[2], sys.argv[3])
    else:  # as scripts/train.py runs it: a user error is one paragraph on rank 0 and exit status 2
        from cosmos_transfer.cli import run_script

        sys.exit(run_script("train", lambda: train(json.loads(sys.argv[2]))))
