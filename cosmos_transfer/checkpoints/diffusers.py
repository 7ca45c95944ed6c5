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


# Cosmos 2.5 (networks/dit_v2_5.py, NVIDIA's names) -> diffusers CosmosTransformer3DModel / CosmosControlNetModel:
# the "Cosmos 2.0" map of diffusers' convert_cosmos_to_diffusers.py (used there for 2.5 too), applied in order as
# substring replacements. Names without a rule are the same in both (crossattn_proj, img_context_proj, q_img, k_img,
# v_img, q_img_norm, k_img_norm, before_proj, after_proj).
_DIFFUSERS_RENAMES_2_5 = (
    ("t_embedder.1", "time_embed.t_embedder"),
    ("t_embedding_norm", "time_embed.norm"),
    ("adaln_modulation_self_attn.1", "norm1.linear_1"),
    ("adaln_modulation_self_attn.2", "norm1.linear_2"),
    ("adaln_modulation_cross_attn.1", "norm2.linear_1"),
    ("adaln_modulation_cross_attn.2", "norm2.linear_2"),
    ("adaln_modulation_mlp.1", "norm3.linear_1"),
    ("adaln_modulation_mlp.2", "norm3.linear_2"),
    ("self_attn", "attn1"),
    ("cross_attn", "attn2"),
    ("q_proj", "to_q"),
    ("k_proj", "to_k"),
    ("v_proj", "to_v"),
    ("output_proj", "to_out.0"),
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
    ("mlp.layer1", "ff.net.0.proj"),
    ("mlp.layer2", "ff.net.2"),
    ("final_layer.adaln_modulation.1", "norm_out.linear_1"),
    ("final_layer.adaln_modulation.2", "norm_out.linear_2"),
    ("final_layer.linear", "proj_out"),
)


def _rename_2_5(key: str) -> str:
    for old, new in _DIFFUSERS_RENAMES_2_5:
        key = key.replace(old, new)
    return key


def net25_to_diffusers(net_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cosmos25DiT (or the base part of Cosmos25ControlDiT) state dict -> CosmosTransformer3DModel state dict."""
    out = {}
    for key, value in net_state.items():
        if key.startswith(("control_blocks", "control_embedder")):
            continue
        if key.startswith("blocks."):
            key = "transformer_" + key
        out[_rename_2_5(key.replace("x_embedder.proj.1", "patch_embed.proj"))] = value
    return out


def control25_to_diffusers(net_state: dict[str, torch.Tensor], branch: int | None = None) -> dict[str, torch.Tensor]:
    """One branch of a Cosmos25ControlDiT state dict -> CosmosControlNetModel state dict (`branch` b of a
    multi-branch net, None for a single-branch one). diffusers' controlnet keeps its own copies of the base's patch
    embedding (`patch_embed_base`), time embedding and text / image projections: they are taken from the base."""
    blocks = "control_blocks." if branch is None else f"control_blocks_{branch}."
    embedder = "control_embedder.proj.1" if branch is None else f"control_embedder.{branch}.proj.1"
    out = {}
    for key, value in net_state.items():
        if key.startswith(blocks):
            out[_rename_2_5("control_blocks." + key[len(blocks):])] = value
        elif key.startswith(embedder):
            out["patch_embed.proj" + key[len(embedder):]] = value
        elif key.startswith("x_embedder.proj.1"):
            out["patch_embed_base.proj" + key[len("x_embedder.proj.1"):]] = value
        elif key.startswith(("t_embedder.", "t_embedding_norm.", "crossattn_proj.", "img_context_proj.")):
            out[_rename_2_5(key)] = value
    return out
