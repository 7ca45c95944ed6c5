#!/usr/bin/env python
"""Benchmark: one training step (forward + backward) of our Cosmos25DiT against diffusers' CosmosTransformer3DModel
in its Cosmos-2.5 configuration, at the same small size with the same weights.

    python benchmarks/dit_v2_5_step.py                  # CPU float32: 8 blocks, 512 ch, 8 heads, latent 16x8x32x32,
                                                        # text 512 x 100,352 (Reason1) -> crossattn_proj -> 1,024
    python benchmarks/dit_v2_5_step.py --device cuda    # GPU bfloat16

Both nets are the 2.5 setup released for Transfer2.5/Predict2.5 at a smaller width and depth: condition-mask and
padding-mask channels, AdaLN-LoRA 256, no learnable position embedding, RoPE extrapolation (h, w, t) = (3, 3, 1),
timestep scale 0.001, `crossattn_proj` from the full 100,352-wide Reason1 embedding (trained, as when the base is
post-trained; it is a quarter of the parameters at this size). Every weight is trained; the loss is the mean square
of the output. The method (alternating steps in one process, per-pair ratios, MemTracker peak on CPU) is
benchmarks/dit_step.py's, whose helpers this reuses. The outputs of the two are compared once before timing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.dit_step import _TorchvisionStandIn, measure, print_table  # noqa: E402
from cosmos_transfer.checkpoints.diffusers import net25_to_diffusers  # noqa: E402
from cosmos_transfer.networks.dit_v2_5 import Cosmos25DiT  # noqa: E402

ROPE = dict(rope_h_extrapolation_ratio=3.0, rope_w_extrapolation_ratio=3.0, rope_t_extrapolation_ratio=1.0)


def build_models(args, device, dtype):
    from diffusers.models.transformers import transformer_cosmos

    if not getattr(transformer_cosmos, "transforms", None):
        transformer_cosmos.transforms = _TorchvisionStandIn
    torch.manual_seed(0)
    ours = Cosmos25DiT(
        max_img_h=args.size, max_img_w=args.size, max_frames=args.frames, in_channels=16, out_channels=16,
        model_channels=args.channels, num_blocks=args.blocks, num_heads=args.heads, crossattn_emb_channels=1024,
        use_crossattn_projection=True, crossattn_proj_in_channels=args.text_width, timestep_scale=0.001, **ROPE,
    )
    with torch.no_grad():  # non-zero AdaLN outputs, as in a trained network
        for p in ours.parameters():
            p.normal_(0, 0.02)
    theirs = transformer_cosmos.CosmosTransformer3DModel(
        in_channels=16 + 1, out_channels=16, num_attention_heads=args.heads,  # + the condition-mask channel
        attention_head_dim=args.channels // args.heads, num_layers=args.blocks, text_embed_dim=1024,
        adaln_lora_dim=256, max_size=(args.frames, args.size, args.size), patch_size=(1, 2, 2),
        rope_scale=(1.0, 3.0, 3.0), concat_padding_mask=True, extra_pos_embed_type=None,
        use_crossattn_projection=True, crossattn_proj_in_channels=args.text_width, encoder_hidden_states_channels=1024,
    )
    theirs.load_state_dict(net25_to_diffusers(ours.state_dict()), strict=True)
    return ours.to(device, dtype).train(), theirs.to(device, dtype).train()


def make_inputs(args, device, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, args.frames, args.size, args.size, generator=g).to(device, dtype)
    t = (torch.rand(1, generator=g) * 1000).to(device, dtype)  # rectified-flow time in [0, 1000]
    text = torch.randn(1, args.text_len, args.text_width, generator=g).to(device, dtype)
    condition_mask = torch.zeros(1, 1, args.frames, args.size, args.size, device=device, dtype=dtype)
    condition_mask[:, :, :1] = 1.0  # video2world with one conditioning latent frame
    padding = torch.zeros(1, 1, args.size * 8, args.size * 8, device=device, dtype=dtype)
    return x, t, text, condition_mask, padding


def forward(name, model, inputs):
    x, t, text, condition_mask, padding = inputs
    if name == "ours":
        return model(x, t, text, condition_mask, padding_mask=padding)
    return model(x, t * 0.001, text, condition_mask=condition_mask, padding_mask=padding).sample


def step_fn(name, model, inputs):
    def step():
        model.zero_grad(set_to_none=True)
        forward(name, model, inputs).float().square().mean().backward()

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8, help="latent frames")
    parser.add_argument("--size", type=int, default=32, help="latent height = width")
    parser.add_argument("--text-len", type=int, default=512)
    parser.add_argument("--text-width", type=int, default=100352, help="raw text width (Reason1: 28 x 3584)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu (float32) or cuda (bfloat16)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    models = dict(zip(("ours", "diffusers"), build_models(args, device, dtype)))
    inputs = make_inputs(args, device, dtype)
    with torch.no_grad():  # the same computation (q/k norm eps: NVIDIA's 1e-6 in ours, 1e-5 in diffusers)
        outputs = {name: forward(name, model, inputs).float() for name, model in models.items()}
    difference = (outputs["ours"] - outputs["diffusers"]).abs().max() / outputs["diffusers"].abs().max()
    steps = {name: step_fn(name, model, inputs) for name, model in models.items()}
    result = measure(steps, models, device, args.repeats, memory=not args.no_memory)
    params = sum(p.numel() for p in models["ours"].parameters())
    print_table(f"Cosmos25DiT fwd+bwd, {args.blocks} blocks x {args.channels} ch x {args.heads} heads, "
                f"{params / 1e6:.1f} M parameters, latent 16x{args.frames}x{args.size}x{args.size}, batch 1, text "
                f"{args.text_len}x{args.text_width} -> 1024, {dtype} on {device}, torch {torch.__version__}, "
                f"{torch.get_num_threads()} threads, {args.repeats} alternating repeats, {datetime.date.today()}; "
                f"outputs differ by {difference:.1e} of their largest value", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
