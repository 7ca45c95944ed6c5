"""Memory accounting of Cosmos-Transfer2.5-2B control post-training, before any step (any machine, meta device).

    python benchmarks/transfer2p5_memory.py           # the 2B edge branch (NVIDIA's released network)
    python benchmarks/transfer2p5_memory.py --14b     # the same recipe on a 14B base (no released Transfer2.5-14B)

The network is `configs/net.py` transfer2p5_2b (Cosmos25ControlDiT: the Predict2.5-2B base with image context and
one 4-block control branch), built on the meta device; the recipe is NVIDIA's freeze_base_model
(vid2vid_model_control_vace_rectified_flow.py): every base weight frozen and stored in bf16, the control blocks and
the control embedder trainable in fp32, AdamW (2 states), an fp32 EMA of the trainable weights
(cosmos_transfer.memory.model_memory). Not counted: activations, the Wan2.1 VAE (~0.5 GB in bf16 when it runs on the
GPU; latents can be cached) and the Reason1 text encoder (embeddings are computed offline). There is no 2.5 model
or experiment yet (rectified flow comes later), so `python -m cosmos_transfer.memory experiment=...` cannot take
it; this script accounts the network, which is all of the model's weights.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.net import TRANSFER2P5_2B  # noqa: E402
from cosmos_transfer.config.lazy import instantiate  # noqa: E402
from cosmos_transfer.memory import model_memory  # noqa: E402


def control_posttraining_net(config, **overrides) -> torch.nn.Module:
    """The network on the meta device as it is post-trained: bf16 frozen base, fp32 trainable control branch."""
    with torch.device("meta"):
        net = instantiate(config, **overrides)
    for name, parameter in net.named_parameters():
        trainable = name.startswith(("control_blocks", "control_embedder"))
        parameter.requires_grad_(trainable)
        if not trainable:
            parameter.data = parameter.data.to(torch.bfloat16)
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--14b", dest="big", action="store_true",
                        help="a 14B base (5120 channels, 40 heads, 36 blocks)")
    args = parser.parse_args()
    overrides = dict(model_channels=5120, num_heads=40, num_blocks=36) if args.big else {}
    net = control_posttraining_net(TRANSFER2P5_2B, **overrides)
    report = model_memory(net, optimizer_states=2, ema=True)
    name = "transfer2p5_14b_edge_posttrain" if args.big else "transfer2p5_2b_edge_posttrain"
    print(report.to_markdown(name))


if __name__ == "__main__":
    main()
