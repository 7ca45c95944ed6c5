"""Our GeneralDIT names (= NVIDIA's Cosmos-1.0 names) -> Hugging Face diffusers' CosmosTransformer3DModel names.

diffusers is an independent implementation of the same network, used by the parity tests and benchmarks.
"""

from __future__ import annotations

import torch

# Official / ours -> diffusers CosmosTransformer3DModel (the name map of diffusers' convert_cosmos_to_diffusers.py,
# Cosmos 1.0). Applied in order as substring replacements on the key without its `blocks.blockN` part.
_DIFFUSERS_RENAMES = (
    ("t_embedder.1", "time_embed.t_embedder"),
    ("affline_norm", "time_embed.norm"),
    (".blocks.0.block.attn", ".attn1"),
    (".blocks.1.block.attn", ".attn2"),
    (".blocks.2.block", ".ff"),
    (".blocks.0.adaLN_modulation.1", ".norm1.linear_1"),
    (".blocks.0.adaLN_modulation.2", ".norm1.linear_2"),
    (".blocks.1.adaLN_modulation.1", ".norm2.linear_1"),
    (".blocks.1.adaLN_modulation.2", ".norm2.linear_2"),
    (".blocks.2.adaLN_modulation.1", ".norm3.linear_1"),
    (".blocks.2.adaLN_modulation.2", ".norm3.linear_2"),
    ("to_q.0", "to_q"),
    ("to_q.1", "norm_q"),
    ("to_k.0", "to_k"),
    ("to_k.1", "norm_k"),
    ("to_v.0", "to_v"),
    ("layer1", "net.0.proj"),
    ("layer2", "net.2"),
    ("proj.1", "proj"),
    ("x_embedder", "patch_embed"),
    ("extra_pos_embedder", "learnable_pos_embed"),
    ("final_layer.adaLN_modulation.1", "norm_out.linear_1"),
    ("final_layer.adaLN_modulation.2", "norm_out.linear_2"),
    ("final_layer.linear", "proj_out"),
)


def net_to_diffusers(net_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GeneralDIT state dict -> CosmosTransformer3DModel state dict (RoPE `seq` buffer dropped: diffusers has none)."""
    out = {}
    for key, value in net_state.items():
        if key == "pos_embedder.seq" or key.endswith("_extra_state"):
            continue
        new_key = key
        if key.startswith("blocks.block"):
            index, rest = key[len("blocks.block"):].split(".", 1)
            new_key = f"transformer_blocks.{index}.{rest}"
        for old, new in _DIFFUSERS_RENAMES:
            new_key = new_key.replace(old, new)
        out[new_key] = value
    return out
