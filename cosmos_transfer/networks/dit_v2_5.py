"""Cosmos25DiT: the Cosmos-2.5 diffusion transformer (base of Cosmos-Predict2.5 and Cosmos-Transfer2.5), top to bottom.

    x [B,16,T,H,W] + condition-mask channel + padding-mask channel --patchify+Linear--> tokens [B,T',H'*W',D]
    timesteps * timestep_scale --sinusoid--> emb (RMSNorm'd, `t_embedding_norm`) + AdaLN-LoRA term [B,3D]
    text embeddings (Reason1: 100,352 wide) --`crossattn_proj` (Linear+GELU)--> 1,024
    optional image context (SigLIP2, 1,152 wide) --`img_context_proj` (Linear+GELU)--> D
    for each block: three AdaLN-modulated, gated sub-blocks
        self-attention (per-head RMSNorm on q, k; 3D RoPE)
        cross-attention to the text (+ to the image context, summed before the output projection)
        MLP (GELU)
    final AdaLN layer -> Linear -> unpatchify -> [B,16,T,H,W]

The same network as Cosmos-1.0's GeneralDIT (networks/dit.py) in its maths, with NVIDIA's 2.5 module names, which
are our parameter names (`blocks.N.self_attn.q_proj`, `.q_norm`, `.output_proj`, `cross_attn.*`, `mlp.layer1/2`,
`adaln_modulation_{self_attn,cross_attn,mlp}.{1,2}`, `t_embedder.1.linear_{1,2}`, `t_embedding_norm`,
`x_embedder.proj.1`, `final_layer.{linear,adaln_modulation.1,2}`, `crossattn_proj.0`, `img_context_proj.0`), so a
2.5 state dict without its `net.` prefix loads with strict=True once its non-weights are left out
(checkpoints/transfer2_5.py). Facts from nvidia-cosmos/cosmos-transfer2.5 @ 2ff49d07
(`cosmos_transfer2/_src/predict2/networks/minimal_v4_dit.py` MiniTrainDIT, `minimal_v1_lvg_dit.py` MinimalV1LVGDiT):
- the condition-mask channel is concatenated by the network (in_channels + 1), zeros when no mask is given (images);
- timesteps are multiplied by `timestep_scale` (0.001 in the released rectified-flow models, whose t is in [0, 1000]);
- RoPE's stored buffers (`pos_embedder.seq`, `dim_spatial_range`, `dim_temporal_range`) are persistent in NVIDIA's
  code, so released bf16 files hold rounded copies; here the positions are recomputed in float32 and never saved;
- no learnable absolute position embedding is built (the released configs say `pos_emb_learnable=True`, which
  MiniTrainDIT ignores, and `extra_per_block_abs_pos_emb=False`); RoPE extrapolation (h, w, t) = (3, 3, 1) and no
  frame-rate scaling of the time axis (`rope_enable_fps_modulation=False`) in the released 2.5 configs;
- Transfer2.5's image cross-attention has its own query (`q_img`, `q_img_norm`: I2VCrossAttentionFull, the default
  `share_q_in_i2v_cross_attn=False` of minimal_v4_lvg_dit_control_vace.py); Predict2.5's MiniTrainDIT shares q
  (I2VCrossAttention): `share_q_in_image_cross_attn=True`.
Not reproduced: NVIDIA's "wan fp32 strategy" (AdaLN modulation and q/k before RoPE in float32 under bf16 autocast);
in float32 the two are the same computation.

Everything the two families compute alike is imported from networks/dit.py, which is its one home: RMSNorm, patch
embedding and unpatchify, timestep MLP and embedding, RoPE, the attention call, the GELU MLP, the AdaLN modulation
and its chunks, the final layer's computation, the padding-mask resize, and the size / input / context checks.
This file holds only the 2.5 module names and what 2.5 adds (condition mask, timestep scale, text/image projection).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cosmos_transfer.networks import te_backend
from cosmos_transfer.networks.dit import (
    FeedForward,
    PatchEmbed,
    RMSNorm,
    RopePosition3D,
    TimestepEmbedding,
    Timesteps,
    adaln_modulation,
    attend,
    check_context,
    check_latent_input,
    check_network_sizes,
    embed_timesteps,
    final_layer,
    modulated_layer_norm,
    modulation_chunks,
    resize_padding_mask,
    unpatchify,
)


# ----------------------------------------------------------------------------------------------------- attention
class Attention(nn.Module):
    """Self-attention (context_dim None: RoPE applies) or cross-attention, with NVIDIA's 2.5 names.

    q_proj / k_proj / v_proj / output_proj (no biases), q_norm / k_norm (RMSNorm per head, eps 1e-6). With
    `image_context_dim`, a second attention over the image context is added to the text attention's output before
    `output_proj`: k_img, v_img, k_img_norm, and (unless `share_q`) its own query q_img, q_img_norm.
    """

    # The attention call; trainer/context_parallel.py replaces it on self-attention instances (Ulysses all-to-all).
    attend = staticmethod(attend)

    def __init__(self, query_dim: int, context_dim: int | None, num_heads: int, backend: str = "torch",
                 image_context_dim: int | None = None, share_q: bool = False):
        super().__init__()
        if query_dim % num_heads:
            raise ValueError(f"Attention: model_channels {query_dim} is not divisible by num_heads {num_heads}")
        self.is_selfattn = context_dim is None
        self.num_heads = num_heads
        self.head_dim = query_dim // num_heads
        context_dim = query_dim if context_dim is None else context_dim
        self.q_proj = nn.Linear(query_dim, query_dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, eps=1e-6)
        self.k_proj = nn.Linear(context_dim, query_dim, bias=False)
        self.k_norm = RMSNorm(self.head_dim, eps=1e-6)
        self.v_proj = nn.Linear(context_dim, query_dim, bias=False)
        self.output_proj = nn.Linear(query_dim, query_dim, bias=False)
        self.has_image_context = image_context_dim is not None
        self.share_q = share_q
        if self.has_image_context:
            if not share_q:
                self.q_img = nn.Linear(query_dim, query_dim, bias=False)
                self.q_img_norm = RMSNorm(self.head_dim, eps=1e-6)
            self.k_img = nn.Linear(image_context_dim, query_dim, bias=False)
            self.v_img = nn.Linear(image_context_dim, query_dim, bias=False)
            self.k_img_norm = RMSNorm(self.head_dim, eps=1e-6)
        # The TE kernel holds no weights; kept out of the module tree so that no `_extra_state` enters our state dict.
        te_attention = te_backend.make_dot_product_attention(num_heads, self.head_dim) if backend == "te" else None
        object.__setattr__(self, "te_attention", te_attention)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], -1, self.num_heads, self.head_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                image_context: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, ..., D] (flattened to a sequence), context [B, M, Dc] | None, image_context [B, N, Di] | None."""
        shape = x.shape
        x = x.reshape(shape[0], -1, shape[-1])
        context = x if context is None else context
        q = self.q_norm(self._heads(self.q_proj(x)))
        k = self.k_norm(self._heads(self.k_proj(context)))
        v = self._heads(self.v_proj(context))
        out = self.attend(q, k, v, rope=rope if self.is_selfattn else None, te_attention=self.te_attention)
        if image_context is not None:
            if not self.has_image_context:
                raise ValueError("Cosmos25DiT: an image context was given to a network built without one "
                                 "(extra_image_context_dim=None)")
            q_img = q if self.share_q else self.q_img_norm(self._heads(self.q_img(x)))
            k_img = self.k_img_norm(self._heads(self.k_img(image_context)))
            v_img = self._heads(self.v_img(image_context))
            out = out + attend(q_img, k_img, v_img, te_attention=self.te_attention)
        return self.output_proj(out).view(shape)


# ----------------------------------------------------------------------------------------------------- the block
class Block(nn.Module):
    """Self-attention -> cross-attention -> MLP, each `x + gate * f(LayerNorm(x) * (1 + scale) + shift)`."""

    def __init__(self, channels: int, context_dim: int, num_heads: int, mlp_ratio: float, use_adaln_lora: bool,
                 adaln_lora_dim: int, backend: str, image_context_dim: int | None, share_q: bool):
        super().__init__()
        self.layer_norm_self_attn = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(channels, None, num_heads, backend)
        self.layer_norm_cross_attn = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.cross_attn = Attention(channels, context_dim, num_heads, backend, image_context_dim, share_q)
        self.layer_norm_mlp = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(channels, int(channels * mlp_ratio))
        self.adaln_modulation_self_attn = adaln_modulation(channels, 3, use_adaln_lora, adaln_lora_dim)
        self.adaln_modulation_cross_attn = adaln_modulation(channels, 3, use_adaln_lora, adaln_lora_dim)
        self.adaln_modulation_mlp = adaln_modulation(channels, 3, use_adaln_lora, adaln_lora_dim)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, crossattn_emb: torch.Tensor,
                rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
                adaln_lora: torch.Tensor | None = None, img_context_emb: torch.Tensor | None = None) -> torch.Tensor:
        # Plain tensor arguments (no containers) so that FSDP2 casting and activation checkpointing see them all.
        rope = (rope_cos, rope_sin) if rope_cos is not None else None
        # 1. self-attention, with RoPE
        shift, scale, gate = modulation_chunks(self.adaln_modulation_self_attn, emb, adaln_lora, 3)
        h = self.self_attn(modulated_layer_norm(x, self.layer_norm_self_attn, shift, scale), rope=rope)
        x = torch.addcmul(x, gate, h)
        # 2. cross-attention to the text (and the image context)
        shift, scale, gate = modulation_chunks(self.adaln_modulation_cross_attn, emb, adaln_lora, 3)
        h = self.cross_attn(modulated_layer_norm(x, self.layer_norm_cross_attn, shift, scale), crossattn_emb,
                            image_context=img_context_emb)
        x = torch.addcmul(x, gate, h)
        # 3. MLP
        shift, scale, gate = modulation_chunks(self.adaln_modulation_mlp, emb, adaln_lora, 3)
        h = self.mlp(modulated_layer_norm(x, self.layer_norm_mlp, shift, scale))
        return torch.addcmul(x, gate, h)


class FinalLayer(nn.Module):
    """dit.py's `final_layer` under NVIDIA's 2.5 names (`layer_norm`, `linear`, `adaln_modulation`)."""

    def __init__(self, channels: int, out_features: int, use_adaln_lora: bool, adaln_lora_dim: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(channels, out_features, bias=False)
        self.adaln_modulation = adaln_modulation(channels, 2, use_adaln_lora, adaln_lora_dim)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, adaln_lora: torch.Tensor | None) -> torch.Tensor:
        return final_layer(x, emb, adaln_lora, self.layer_norm, self.adaln_modulation, self.linear)


# ----------------------------------------------------------------------------------------------------- the network
@dataclass
class BlockInputs:
    """Everything the blocks need besides the tokens, from `forward_before_blocks`.

    x: tokens [B, T', S, D]; emb: normalized time embedding [B, 1 or T', D]; adaln_lora [B, 1 or T', 3D] | None;
    crossattn_emb [B, M, 1024] (projected); img_context_emb [B, N, D] | None (projected);
    rope_cos / rope_sin [1, T'*S, head_dim]; input_shape (B, C, T, H, W) of the latent input.
    """

    x: torch.Tensor
    emb: torch.Tensor
    adaln_lora: torch.Tensor | None
    crossattn_emb: torch.Tensor
    img_context_emb: torch.Tensor | None
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor
    input_shape: tuple[int, int, int, int, int]

    def block_kwargs(self) -> dict:
        return dict(emb=self.emb, crossattn_emb=self.crossattn_emb, rope_cos=self.rope_cos, rope_sin=self.rope_sin,
                    adaln_lora=self.adaln_lora, img_context_emb=self.img_context_emb)


class Cosmos25DiT(nn.Module):
    """The Cosmos-2.5 DiT (NVIDIA's MinimalV1LVGDiT: MiniTrainDIT + condition-mask channel + timestep scale).

    Args:
        max_img_h, max_img_w, max_frames: largest latent size (sets the RoPE range; released: 240, 240, 128).
        in_channels: latent channels (16). The network adds the condition-mask channel and, with
            concat_padding_mask, the padding-mask channel: `x_embedder` takes in_channels + 2.
        out_channels: predicted channels (16).
        patch_spatial, patch_temporal: patch size (2, 1).
        model_channels, num_blocks, num_heads, mlp_ratio: width, depth, heads, MLP expansion
            (2B: 2048, 28, 16, 4; 14B: 5120, 36, 40, 4).
        crossattn_emb_channels: text width the cross-attention sees (1024).
        use_crossattn_projection, crossattn_proj_in_channels: `crossattn_proj` (Linear+GELU) from the raw text
            embeddings (Reason1: 28 layers x 3584 = 100,352) to crossattn_emb_channels.
        text_embeddings_projected: the text arrives already through `crossattn_proj` (cached by
            scripts/prepare_dataset.py --project-with, for a frozen base): crossattn_proj is kept, so that NVIDIA's
            files load strictly, but frozen and not applied; crossattn_emb is then crossattn_emb_channels wide.
        extra_image_context_dim: width of the image context (SigLIP2: 1152) or None for no image cross-attention.
        share_q_in_image_cross_attn: the image attention reuses the text query (Predict2.5) instead of its own.
        use_adaln_lora, adaln_lora_dim: AdaLN-LoRA (released: True, 256).
        rope_{h,w,t}_extrapolation_ratio: NTK factors of the 3D RoPE (released 2.5: 3, 3, 1).
        rope_enable_fps_modulation: scale RoPE time positions by base_fps / fps (released 2.5: False).
        base_fps: frame rate at which RoPE time positions are frame indices (24).
        timestep_scale: timesteps are multiplied by it before the embedding (released rectified flow: 0.001).
        attention_backend: "torch" (SDPA, any device) or "te" (Transformer Engine kernels on CUDA tensors).
    """

    def __init__(
        self,
        max_img_h: int, max_img_w: int, max_frames: int, in_channels: int, out_channels: int,
        patch_spatial: int = 2, patch_temporal: int = 1, concat_padding_mask: bool = True,
        model_channels: int = 2048, num_blocks: int = 28, num_heads: int = 16, mlp_ratio: float = 4.0,
        crossattn_emb_channels: int = 1024,
        use_crossattn_projection: bool = False, crossattn_proj_in_channels: int = 1024,
        text_embeddings_projected: bool = False,
        extra_image_context_dim: int | None = None, share_q_in_image_cross_attn: bool = False,
        use_adaln_lora: bool = True, adaln_lora_dim: int = 256,
        rope_h_extrapolation_ratio: float = 1.0, rope_w_extrapolation_ratio: float = 1.0,
        rope_t_extrapolation_ratio: float = 1.0, rope_enable_fps_modulation: bool = False,
        base_fps: float = 24.0, timestep_scale: float = 1.0, attention_backend: str = "torch",
    ):
        super().__init__()
        sizes = dict(max_img_h=max_img_h, max_img_w=max_img_w, max_frames=max_frames, in_channels=in_channels,
                     out_channels=out_channels, patch_spatial=patch_spatial, patch_temporal=patch_temporal,
                     model_channels=model_channels, num_blocks=num_blocks, num_heads=num_heads,
                     crossattn_emb_channels=crossattn_emb_channels,
                     crossattn_proj_in_channels=crossattn_proj_in_channels)
        if extra_image_context_dim is not None:
            sizes["extra_image_context_dim"] = extra_image_context_dim
        check_network_sizes("Cosmos25DiT", sizes, attention_backend)
        self.max_img_h, self.max_img_w, self.max_frames = max_img_h, max_img_w, max_frames
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.patch_spatial = patch_spatial
        self.patch_temporal = patch_temporal
        self.concat_padding_mask = concat_padding_mask
        self.model_channels = model_channels
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.crossattn_emb_channels = crossattn_emb_channels
        self.use_crossattn_projection = use_crossattn_projection
        self.crossattn_proj_in_channels = crossattn_proj_in_channels
        if text_embeddings_projected and not use_crossattn_projection:
            raise ValueError("Cosmos25DiT: text_embeddings_projected=True needs use_crossattn_projection=True (the "
                             "embeddings were projected by a crossattn_proj; without one, give raw embeddings "
                             "crossattn_emb_channels wide and leave text_embeddings_projected False)")
        self.text_embeddings_projected = text_embeddings_projected
        self.extra_image_context_dim = extra_image_context_dim
        self.use_adaln_lora = use_adaln_lora
        self.rope_enable_fps_modulation = rope_enable_fps_modulation
        self.timestep_scale = timestep_scale
        self.attention_backend = attention_backend
        # What a block is built from (the control branch builds its blocks the same way).
        self._block_args = (model_channels, crossattn_emb_channels, num_heads, mlp_ratio, use_adaln_lora,
                            adaln_lora_dim, attention_backend,
                            None if extra_image_context_dim is None else model_channels, share_q_in_image_cross_attn)

        # + condition mask (+ padding mask)
        self.x_embedder = PatchEmbed(in_channels + 1 + int(concat_padding_mask), model_channels, patch_spatial,
                                     patch_temporal)
        self.pos_embedder = RopePosition3D(
            model_channels // num_heads, max_img_h // patch_spatial, max_img_w // patch_spatial,
            max_frames // patch_temporal, rope_h_extrapolation_ratio, rope_w_extrapolation_ratio,
            rope_t_extrapolation_ratio, base_fps, persistent=False,
        )
        self.t_embedder = nn.Sequential(Timesteps(model_channels), TimestepEmbedding(model_channels, use_adaln_lora))
        # A ModuleDict keyed "0".."N-1" (the state-dict names of NVIDIA's ModuleList), so that trainer/parallelize.py
        # finds the blocks and shards / checkpoints each one as it does for GeneralDIT.
        self.blocks = nn.ModuleDict({str(i): self.make_block() for i in range(num_blocks)})
        self.final_layer = FinalLayer(model_channels, patch_spatial * patch_spatial * patch_temporal * out_channels,
                                      use_adaln_lora, adaln_lora_dim)
        self.t_embedding_norm = RMSNorm(model_channels, eps=1e-6)
        if extra_image_context_dim is not None:
            self.img_context_proj = nn.Sequential(nn.Linear(extra_image_context_dim, model_channels), nn.GELU())
        if use_crossattn_projection:
            self.crossattn_proj = nn.Sequential(nn.Linear(crossattn_proj_in_channels, crossattn_emb_channels),
                                                nn.GELU())
            if text_embeddings_projected:  # applied offline to the cached embeddings: it must not change now
                self.crossattn_proj.requires_grad_(False)
        self.init_weights()

    def make_block(self) -> Block:
        return Block(*self._block_args)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialization as NVIDIA's: truncated normal (std 1/sqrt(fan_in), +-3 std) Linears, zero AdaLN outputs
        (the blocks start as identities), unit norms; the text and image projections keep PyTorch's default.
        Nothing on the meta device; after `net.to_empty(device=...)` call it again (the RoPE positions are
        recomputed then too)."""
        if self.x_embedder.proj[1].weight.is_meta:
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                std = module.in_features ** -0.5
                nn.init.trunc_normal_(module.weight, std=std, a=-3 * std, b=3 * std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
            elif isinstance(module, RopePosition3D):
                module.seq.copy_(torch.arange(len(module.seq), dtype=module.seq.dtype))
        for module in self.modules():
            if isinstance(module, (Block, FinalLayer)):
                for name, adaln in module.named_children():
                    if name.startswith("adaln_modulation"):
                        nn.init.zeros_(adaln[-1].weight)
        for name in ("crossattn_proj", "img_context_proj"):  # NVIDIA leaves these at PyTorch's default
            if hasattr(self, name):
                getattr(self, name)[0].reset_parameters()

    # ------------------------------------------------------------------------------------------------ pieces
    def embed_input(self, x: torch.Tensor, condition_mask: torch.Tensor | None, padding_mask: torch.Tensor | None,
                    embedder: nn.Module, what: str = "x") -> torch.Tensor:
        """[x | condition mask | padding mask] -> `embedder` -> tokens [B, T', S, D]. Also used for control inputs."""
        B, _, T, H, W = x.shape
        if condition_mask is None:  # text-to-world and images: no frame is given
            condition_mask = x.new_zeros(B, 1, T, H, W)
        elif condition_mask.shape != (B, 1, T, H, W):
            raise ValueError(f"Cosmos25DiT: condition_mask must be [B,1,T,H,W] = {(B, 1, T, H, W)}, "
                             f"got {tuple(condition_mask.shape)}")
        parts = [x, condition_mask.to(x.dtype)]
        if self.concat_padding_mask:
            parts.append(resize_padding_mask(padding_mask, x, "Cosmos25DiT"))
        return embedder(torch.cat(parts, dim=1))

    def forward_before_blocks(self, x: torch.Tensor, timesteps: torch.Tensor, crossattn_emb: torch.Tensor,
                              condition_mask: torch.Tensor | None = None, fps: torch.Tensor | None = None,
                              padding_mask: torch.Tensor | None = None,
                              img_context_emb: torch.Tensor | None = None) -> BlockInputs:
        """Embed the input, the time, the text (and image) context and the positions: everything the blocks need."""
        check_latent_input("Cosmos25DiT", x, self.in_channels, self.patch_temporal, self.patch_spatial,
                           " (the condition mask is a separate argument)")
        B, _, T, H, W = x.shape
        projects = self.use_crossattn_projection and not self.text_embeddings_projected
        self._check_text_kind(crossattn_emb)
        text_width = self.crossattn_proj_in_channels if projects else self.crossattn_emb_channels
        check_context("Cosmos25DiT", "crossattn_emb", crossattn_emb, B, text_width, "L")
        # 1. tokens from [x | condition mask | padding mask]
        tokens = self.embed_input(x, condition_mask, padding_mask, self.x_embedder)
        # 2. 3D RoPE of the token grid (time positions scaled by the frame rate only when enabled)
        grid = (T // self.patch_temporal, H // self.patch_spatial, W // self.patch_spatial)
        rope_cos, rope_sin = self.pos_embedder(*grid, fps=fps if self.rope_enable_fps_modulation else None)
        # 3. time embedding and AdaLN-LoRA term
        emb, adaln_lora = embed_timesteps(self.t_embedder, self.t_embedding_norm, timesteps * self.timestep_scale,
                                          grid[0], B, "Cosmos25DiT")
        # 4. text (and image) context, projected (the text unless it was projected offline)
        if projects:
            crossattn_emb = self.crossattn_proj(crossattn_emb)
        if img_context_emb is not None:
            if self.extra_image_context_dim is None:
                raise ValueError("Cosmos25DiT: img_context_emb was given to a network built without image context "
                                 "(extra_image_context_dim=None)")
            check_context("Cosmos25DiT", "img_context_emb", img_context_emb, B, self.extra_image_context_dim, "N")
            img_context_emb = self.img_context_proj(img_context_emb).to(tokens.dtype)
        return BlockInputs(x=tokens, emb=emb, adaln_lora=adaln_lora, crossattn_emb=crossattn_emb.to(tokens.dtype),
                           img_context_emb=img_context_emb, rope_cos=rope_cos, rope_sin=rope_sin,
                           input_shape=tuple(x.shape))

    def _check_text_kind(self, crossattn_emb: torch.Tensor) -> None:
        """Raw text embeddings given to a net that expects projected ones, or the reverse: say which is which."""
        raw, projected, width = self.crossattn_proj_in_channels, self.crossattn_emb_channels, crossattn_emb.shape[-1]
        if not self.use_crossattn_projection or raw == projected:
            return
        if width == projected and not self.text_embeddings_projected:
            raise ValueError(f"Cosmos25DiT: crossattn_emb is {width} wide, the width of crossattn_proj's output: "
                             "text embeddings already projected (scripts/prepare_dataset.py --project-with). Build "
                             f"the net with text_embeddings_projected=True for them, or give the raw {raw}-wide ones")
        if width == raw and self.text_embeddings_projected:
            raise ValueError(f"Cosmos25DiT: the net was built with text_embeddings_projected=True and takes "
                             f"{projected}-wide embeddings (after the base's crossattn_proj), got raw {width}-wide "
                             "ones: use the projected cache (reason1_projected/) or text_embeddings_projected=False")

    def decode_output(self, x: torch.Tensor, inputs: BlockInputs) -> torch.Tensor:
        """Final AdaLN layer and unpatchify (features ordered (h-patch, w-patch, t-patch, C), channels fastest)."""
        x = self.final_layer(x, inputs.emb, inputs.adaln_lora)  # [B, T', S, ps*ps*pt*C_out]
        return unpatchify(x, inputs.input_shape, self.patch_temporal, self.patch_spatial)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, crossattn_emb: torch.Tensor,
                condition_mask: torch.Tensor | None = None, fps: torch.Tensor | None = None,
                padding_mask: torch.Tensor | None = None, img_context_emb: torch.Tensor | None = None) -> torch.Tensor:
        """x [B,C,T,H,W], timesteps [B] or [B,T'], crossattn_emb [B,L,Dtext], condition_mask [B,1,T,H,W] | None,
        padding_mask [B|1,1,H_px,W_px] | None, img_context_emb [B,N,Dimg] | None -> [B,C_out,T,H,W]."""
        inputs = self.forward_before_blocks(x, timesteps, crossattn_emb, condition_mask, fps, padding_mask,
                                            img_context_emb)
        tokens = inputs.x
        kwargs = inputs.block_kwargs()
        for block in self.blocks.values():
            tokens = block(tokens, **kwargs)
        return self.decode_output(tokens, inputs)
