"""GeneralDIT: the Cosmos-1.0 diffusion transformer (base network of Cosmos-Transfer1-7B), top to bottom.

    x [B,C,T,H,W] (+ padding-mask channel) --patchify+Linear--> tokens [B,T',H'*W',D]
    timesteps --sinusoid--> emb (RMSNorm'd "affline" embedding) + AdaLN-LoRA term [B,3D]
    for each block: + extra learnable abs. position embedding, then three AdaLN-modulated, gated sub-blocks:
        FA  self-attention (per-head RMSNorm on q, k; 3D RoPE)
        CA  cross-attention to the text embeddings
        MLP GELU feed-forward
    final AdaLN layer -> Linear -> unpatchify -> [B,C_out,T,H,W]

Parameter names are those of the official checkpoints (e.g. `blocks.block0.blocks.0.block.attn.to_q.0.weight`,
`to_q.1` being the q RMSNorm), so an official state dict (without its `net.` prefix, see checkpoints/transfer1.py)
loads with strict=True. The EDM uncertainty head `logvar` is NOT part of the net: official files keep it beside the
net (`net.*` and `logvar.0.freqs`, `logvar.0.phases`, `logvar.1.weight`), which is exactly the layout of our
DiffusionModel's state dict (it builds `logvar` itself when the net has none).

Internally tokens are kept as [B, T', S, D] (S = H'*W'): LayerNorm/Linear act on the last dim, attention views the
sequence as [B, T'*S, ...] without copies, and per-frame modulation ([B,T'] timesteps) broadcasts over S.
Memory: two small autograd functions (RMSNorm, GELU->Linear) recompute an elementwise result in backward instead of
keeping it, and a modulation shared by all tokens goes into LayerNorm's fused affine; activations of a block are
~0.7x those of diffusers' implementation, at the same speed (benchmarks/dit_step.py).

The network can also be run in pieces (used by the ControlNet branch):
    inputs = net.forward_before_blocks(x, timesteps, crossattn_emb, ...)
    tokens = net.forward_blocks(inputs.x, inputs, block_residuals={"block0": r0, ...})
    out = net.decode_output(tokens, inputs)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cosmos_transfer.networks import te_backend

ATTENTION_BACKENDS = ("torch", "te")


# ----------------------------------------------------------------------------------------------------- small parts
class _RMSNormFunction(torch.autograd.Function):
    """y = x / rms(x) * weight, saving only x and 1/rms for backward.

    PyTorch's rms_norm is a chain of elementwise ops on CPU whose autograd keeps several full-size intermediates;
    recomputing x / rms in backward is one cheap pass and saves about two activations per norm (q and k of every
    attention). Statistics are computed in float32 whatever the input dtype, as Transformer Engine does.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))  # float32 for bf16/fp16, unchanged otherwise
        rstd = torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return (x32 * rstd).to(x.dtype) * weight.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        x_hat = x.to(rstd.dtype) * rstd
        grad32 = grad.to(rstd.dtype)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad32 * x_hat).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        grad_x_hat = grad32 * weight.to(rstd.dtype)
        # d/dx of x*rstd: rstd * (g - x_hat * mean(g * x_hat))
        grad_x = rstd * (grad_x_hat - x_hat * (grad_x_hat * x_hat).mean(dim=-1, keepdim=True))
        return grad_x.to(x.dtype), grad_weight, None


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale (`weight`, the name TE's RMSNorm uses in official checkpoints)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RMSNormFunction.apply(x, self.weight, self.eps)


class Patchify(nn.Module):
    """[B,C,T,H,W] -> [B, T/pt, (H/ps)*(W/ps), C*pt*ps*ps] with features ordered (c, t, h, w) as in Cosmos."""

    def __init__(self, patch_spatial: int, patch_temporal: int):
        super().__init__()
        self.patch_spatial = patch_spatial
        self.patch_temporal = patch_temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        pt, ps = self.patch_temporal, self.patch_spatial
        x = x.reshape(B, C, T // pt, pt, H // ps, ps, W // ps, ps)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # B T' H' W' C pt ps ps
        return x.reshape(B, T // pt, (H // ps) * (W // ps), C * pt * ps * ps)


def unpatchify(x: torch.Tensor, input_shape: tuple[int, ...], patch_temporal: int, patch_spatial: int) -> torch.Tensor:
    """Tokens [B, T', S, ps*ps*pt*C] (features ordered (h-patch, w-patch, t-patch, C), as the final layers of both
    families write them) -> [B, C, T, H, W], the (B, _, T, H, W) of `input_shape`."""
    B, _, T, H, W = input_shape
    pt, ps = patch_temporal, patch_spatial
    x = x.reshape(B, T // pt, H // ps, W // ps, ps, ps, pt, -1)
    x = x.permute(0, 7, 1, 6, 2, 4, 3, 5)  # B C T' pt H' ps W' ps
    return x.reshape(B, -1, T, H, W)


def resize_padding_mask(padding_mask: torch.Tensor | None, x: torch.Tensor, owner: str) -> torch.Tensor:
    """Padding mask [B|1,1,H_px,W_px] (pixel size) -> [B,1,T,H,W] at the latent size of x (nearest), zeros if None.
    `owner` names the network in the error message."""
    B, _, T, H, W = x.shape
    if padding_mask is None:
        return x.new_zeros(B, 1, T, H, W)
    if padding_mask.ndim == 3:
        padding_mask = padding_mask[:, None]
    if padding_mask.ndim != 4 or padding_mask.shape[1] != 1 or padding_mask.shape[0] not in (1, B):
        raise ValueError(f"{owner}: padding_mask must be [B,1,H,W] (B={B}), got {tuple(padding_mask.shape)}")
    if padding_mask.shape[-2:] != (H, W):
        padding_mask = F.interpolate(padding_mask.float(), size=(H, W), mode="nearest")
    return padding_mask.to(x.dtype)[:, :, None].expand(B, 1, T, H, W)


class PatchEmbed(nn.Module):
    """Patchify + Linear (no bias). `proj.0` is parameter-free, so the weight is `x_embedder.proj.1.weight`."""

    def __init__(self, in_channels: int, model_channels: int, patch_spatial: int, patch_temporal: int):
        super().__init__()
        self.proj = nn.Sequential(
            Patchify(patch_spatial, patch_temporal),
            nn.Linear(in_channels * patch_spatial * patch_spatial * patch_temporal, model_channels, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Timesteps(nn.Module):
    """Sinusoidal timestep features [N] -> [N, num_channels], ordered [cos, sin] (Cosmos / SDXL)."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = num_channels

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
        angles = timesteps.float()[:, None] * torch.exp(exponent)[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=-1).to(timesteps.dtype)


class TimestepEmbedding(nn.Module):
    """MLP on the sinusoid. With AdaLN-LoRA it returns (sinusoid, lora term [N,3D]); otherwise (MLP output, None)."""

    def __init__(self, channels: int, use_adaln_lora: bool):
        super().__init__()
        self.use_adaln_lora = use_adaln_lora
        self.linear_1 = nn.Linear(channels, channels, bias=not use_adaln_lora)
        self.activation = nn.SiLU()
        self.linear_2 = nn.Linear(channels, 3 * channels if use_adaln_lora else channels, bias=not use_adaln_lora)

    def forward(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.linear_2(self.activation(self.linear_1(sample)))
        if self.use_adaln_lora:
            return sample, out
        return out, None


def embed_timesteps(t_embedder: nn.Module, norm: nn.Module, timesteps: torch.Tensor, num_token_frames: int,
                    batch: int, owner: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """timesteps [B] or [B,T'] -> (norm(time embedding) [B, 1|T', D], AdaLN-LoRA term [B, 1|T', 3D] | None).

    `t_embedder` is (Timesteps, TimestepEmbedding); per-frame timesteps give per-frame modulation."""
    if timesteps.ndim == 2 and timesteps.shape[1] == 1:
        timesteps = timesteps[:, 0]
    if timesteps.ndim == 1 and timesteps.shape[0] == batch:
        frames = 1
    elif timesteps.ndim == 2 and timesteps.shape == (batch, num_token_frames):
        frames = num_token_frames
    else:
        raise ValueError(f"{owner}: timesteps must be [B] or [B,T'] with B={batch}, T'={num_token_frames}, "
                         f"got shape {tuple(timesteps.shape)}")
    emb, adaln_lora = t_embedder(timesteps.flatten())
    emb = norm(emb).view(batch, frames, -1)
    if adaln_lora is not None:
        adaln_lora = adaln_lora.view(batch, frames, -1)
    return emb, adaln_lora


class RopePosition3D(nn.Module):
    """3D rotary embedding: head dim split into (t, h, w) parts, each with its own NTK-scaled base.

    Returns (cos, signed_sin), each [B or 1, T'*S, head_dim] in float32, for the "rotate half" convention (the head
    dim is [first half | second half], both halves holding the (t, h, w) frequencies); signed_sin = [-sin | sin].
    `seq` is a persistent buffer only because official Cosmos-1.0 checkpoints carry it (`pos_embedder.seq`);
    `persistent=False` keeps it out of the state dict (the 2.5 networks, whose files hold bf16-rounded copies).
    """

    def __init__(
        self,
        head_dim: int, len_h: int, len_w: int, len_t: int,
        h_extrapolation_ratio: float = 1.0, w_extrapolation_ratio: float = 1.0, t_extrapolation_ratio: float = 1.0,
        base_fps: float = 24.0, persistent: bool = True,
    ):
        super().__init__()
        self.register_buffer("seq", torch.arange(max(len_h, len_w, len_t), dtype=torch.float32), persistent=persistent)
        self.max_h, self.max_w, self.max_t = len_h, len_w, len_t
        self.base_fps = base_fps
        self.dim_h = self.dim_w = head_dim // 6 * 2
        self.dim_t = head_dim - 2 * self.dim_h
        if min(self.dim_h, self.dim_t) < 4:
            raise ValueError(f"RopePosition3D: head_dim {head_dim} too small for 3D RoPE (need >= 12)")
        # NTK-aware scaling: stretching the base by ratio^(d/(d-2)) extrapolates the axis by `ratio`.
        self.h_ntk_factor = h_extrapolation_ratio ** (self.dim_h / (self.dim_h - 2))
        self.w_ntk_factor = w_extrapolation_ratio ** (self.dim_w / (self.dim_w - 2))
        self.t_ntk_factor = t_extrapolation_ratio ** (self.dim_t / (self.dim_t - 2))

    @staticmethod
    def _freqs(dim: int, ntk_factor: float, device: torch.device) -> torch.Tensor:
        theta = 10000.0 * ntk_factor
        return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device)[: dim // 2] / dim)

    def forward(self, T: int, H: int, W: int, fps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if H > self.max_h or W > self.max_w or T > self.max_t:
            raise ValueError(
                f"DiT: token grid (T={T}, H={H}, W={W}) exceeds the maximum "
                f"(T={self.max_t}, H={self.max_h}, W={self.max_w}) set by max_frames/max_img_h/max_img_w"
            )
        device = self.seq.device
        seq = self.seq.float()
        half_h = torch.outer(seq[:H], self._freqs(self.dim_h, self.h_ntk_factor, device))  # [H, dh/2]
        half_w = torch.outer(seq[:W], self._freqs(self.dim_w, self.w_ntk_factor, device))  # [W, dw/2]
        t_freqs = self._freqs(self.dim_t, self.t_ntk_factor, device)
        if fps is None:  # no frame-rate scaling (images, or video at the base rate)
            half_t = torch.outer(seq[:T], t_freqs)[None]  # [1, T, dt/2]
        else:  # time in units of base-rate frames, per sample
            positions = seq[:T][None, :] / fps.float().reshape(-1, 1).to(device) * self.base_fps
            half_t = positions[..., None] * t_freqs  # [B, T, dt/2]
        n = half_t.shape[0]
        angles = torch.cat(
            [
                half_t[:, :, None, None, :].expand(n, T, H, W, -1),
                half_h[None, None, :, None, :].expand(n, T, H, W, -1),
                half_w[None, None, None, :, :].expand(n, T, H, W, -1),
            ],
            dim=-1,
        ).reshape(n, T * H * W, -1)
        sin = angles.sin()
        return torch.cat([angles, angles], dim=-1).cos(), torch.cat([-sin, sin], dim=-1)


class LearnablePosEmbAxis(nn.Module):
    """Extra absolute position embedding: per-axis learned tables, summed and RMS-normalized: [1, T', S, D]."""

    def __init__(self, model_channels: int, len_h: int, len_w: int, len_t: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.pos_emb_h = nn.Parameter(torch.zeros(len_h, model_channels))
        self.pos_emb_w = nn.Parameter(torch.zeros(len_w, model_channels))
        self.pos_emb_t = nn.Parameter(torch.zeros(len_t, model_channels))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.pos_emb_h.is_meta:
            return
        for table in (self.pos_emb_h, self.pos_emb_w, self.pos_emb_t):
            nn.init.trunc_normal_(table, std=0.02, a=-2.0, b=2.0)

    def forward(self, T: int, H: int, W: int) -> torch.Tensor:
        if H > len(self.pos_emb_h) or W > len(self.pos_emb_w) or T > len(self.pos_emb_t):
            raise ValueError(
                f"GeneralDIT: token grid (T={T}, H={H}, W={W}) exceeds the extra position embedding tables "
                f"(T={len(self.pos_emb_t)}, H={len(self.pos_emb_h)}, W={len(self.pos_emb_w)})"
            )
        emb = self.pos_emb_t[:T, None, None] + self.pos_emb_h[None, :H, None] + self.pos_emb_w[None, None, :W]
        rms = torch.linalg.vector_norm(emb, dim=-1, keepdim=True, dtype=torch.float32) / math.sqrt(emb.shape[-1])
        emb = emb / (rms + self.eps).to(emb.dtype)
        return emb.reshape(1, T, H * W, -1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, L, heads, hd] ("rotate half" convention, as TE / diffusers): x*cos + [-x2, x1]*sin.

    Takes `signed_sin` = [-sin | sin] over the two halves (RopePosition3D returns it), so that the rotated copy of x
    is a plain half swap (one pass fewer than negating).
    """
    cos, signed_sin = cos[:, :, None, :].to(x.dtype), signed_sin[:, :, None, :].to(x.dtype)
    swapped = torch.roll(x, shifts=x.shape[-1] // 2, dims=-1)  # [x2, x1]
    return torch.addcmul(x * cos, swapped, signed_sin)


# ----------------------------------------------------------------------------------------------------- attention
def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    te_attention=None,
) -> torch.Tensor:
    """Multi-head attention of q [B, L, heads, hd] over k, v [B, M, heads, hd] -> [B, L, heads*hd].

    RoPE (cos, signed_sin from RopePosition3D) rotates q and k when given. `te_attention` (a Transformer Engine
    kernel, te_backend.make_dot_product_attention) is used for CUDA tensors without a mask; SDPA otherwise.
    Shared by the Cosmos-1.0 and 2.5 networks.
    """
    use_te = te_attention is not None and q.is_cuda
    if rope is not None:
        if use_te and rope[0].shape[0] == 1:
            q, k = te_backend.apply_rope(q, rope), te_backend.apply_rope(k, rope)
        else:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    if use_te and mask is None:
        return te_attention(q, k, v)  # [B, L, heads*hd], "bshd"
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
    return out.transpose(1, 2).flatten(2)


class Attention(nn.Module):
    """Multi-head attention; self-attention when context_dim is None (then RoPE applies).

    Official names: to_q = (Linear, RMSNorm per head), to_k = (Linear, RMSNorm), to_v = (Linear, Identity),
    to_out = (Linear, Dropout).
    """

    # The attention call; trainer/context_parallel.py replaces it on self-attention instances (Ulysses all-to-all).
    attend = staticmethod(attend)

    def __init__(self, query_dim: int, context_dim: int | None, num_heads: int, backend: str = "torch"):
        super().__init__()
        if query_dim % num_heads:
            raise ValueError(f"Attention: model_channels {query_dim} is not divisible by num_heads {num_heads}")
        self.is_selfattn = context_dim is None
        self.num_heads = num_heads
        self.head_dim = query_dim // num_heads
        context_dim = query_dim if context_dim is None else context_dim
        self.to_q = nn.Sequential(nn.Linear(query_dim, query_dim, bias=False), RMSNorm(self.head_dim, eps=1e-6))
        self.to_k = nn.Sequential(nn.Linear(context_dim, query_dim, bias=False), RMSNorm(self.head_dim, eps=1e-6))
        self.to_v = nn.Sequential(nn.Linear(context_dim, query_dim, bias=False), nn.Identity())
        self.to_out = nn.Sequential(nn.Linear(query_dim, query_dim, bias=False), nn.Dropout(0.0))
        self.backend = backend
        # The TE kernel holds no weights; it is kept out of the module tree so that its `_extra_state` never enters
        # our state dict (official checkpoints load strictly with either backend).
        te_attention = te_backend.make_dot_product_attention(num_heads, self.head_dim) if backend == "te" else None
        object.__setattr__(self, "te_attention", te_attention)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x [B, ..., D] (flattened to a sequence), context [B, M, Dc] | None, mask bool [B,1,1,M] | None."""
        shape = x.shape
        B = shape[0]
        x = x.reshape(B, -1, shape[-1])
        context = x if context is None else context
        q = self.to_q[1](self.to_q[0](x).view(B, -1, self.num_heads, self.head_dim))
        k = self.to_k[1](self.to_k[0](context).view(B, -1, self.num_heads, self.head_dim))
        v = self.to_v[0](context).view(B, -1, self.num_heads, self.head_dim)
        out = self.attend(q, k, v, mask=mask, rope=rope if self.is_selfattn else None, te_attention=self.te_attention)
        return self.to_out(out).view(shape)


class AttentionBlock(nn.Module):
    """Holds `attn` only so that parameter names match the official `...block.attn.to_q...`."""

    def __init__(self, query_dim: int, context_dim: int | None, num_heads: int, backend: str):
        super().__init__()
        self.attn = Attention(query_dim, context_dim, num_heads, backend)

    def forward(self, x, context=None, mask=None, rope=None) -> torch.Tensor:
        return self.attn(x, context, mask, rope)


class _GeluLinearFunction(torch.autograd.Function):
    """y = gelu(u) @ weight^T, saving only u: gelu(u) is recomputed in backward (one elementwise pass), instead of
    keeping a second [tokens, 4D] activation, the largest one of the block. No matmul is recomputed."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(u, weight)
        return F.linear(F.gelu(u), weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, weight = ctx.saved_tensors
        # Explicit casts: under autocast the forward ran in low precision while the weight may be float32.
        grad_weight = None
        if ctx.needs_input_grad[1]:
            activation = F.gelu(u).to(grad.dtype)
            grad_weight = (grad.reshape(-1, grad.shape[-1]).t() @ activation.reshape(-1, u.shape[-1]))
            grad_weight = grad_weight.to(weight.dtype)
        grad_u = torch.ops.aten.gelu_backward((grad @ weight.to(grad.dtype)).to(u.dtype), u)
        return grad_u, grad_weight


class FeedForward(nn.Module):
    """GELU MLP; official names layer1 / layer2 (layer2's weight is applied through _GeluLinearFunction)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.layer1 = nn.Linear(dim, hidden_dim, bias=False)
        self.layer2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self.layer2) is nn.Linear:  # the memory-saving path applies the bare weight itself
            return _GeluLinearFunction.apply(self.layer1(x), self.layer2.weight)
        # A wrapped layer (peft's LoRA: cosmos_transfer/lora.py) computes more than its weight: it must be called.
        return self.layer2(F.gelu(self.layer1(x)))


def modulated_layer_norm(x: torch.Tensor, norm: nn.LayerNorm, shift: torch.Tensor, scale: torch.Tensor
                         ) -> torch.Tensor:
    """LayerNorm(x) * (1 + scale) + shift, for x [B,T,S,D] and shift/scale [B, 1|T, 1, D]."""
    if shift.shape[0] == 1 and shift.shape[1] == 1:
        # One modulation for every token (batch 1, one timestep): it is LayerNorm's affine, done in the fused kernel,
        # which saves an elementwise pass each way and a saved activation.
        return F.layer_norm(x, norm.normalized_shape, (1 + scale).reshape(-1), shift.reshape(-1), norm.eps)
    return torch.addcmul(shift, norm(x), 1 + scale)


def adaln_modulation(channels: int, chunks: int, use_adaln_lora: bool, adaln_lora_dim: int) -> nn.Sequential:
    """SiLU -> Linear (-> Linear through the LoRA bottleneck), no biases, as in the official checkpoints."""
    if use_adaln_lora:
        return nn.Sequential(
            nn.SiLU(),
            nn.Linear(channels, adaln_lora_dim, bias=False),
            nn.Linear(adaln_lora_dim, chunks * channels, bias=False),
        )
    return nn.Sequential(nn.SiLU(), nn.Linear(channels, chunks * channels, bias=False))


def modulation_chunks(adaln: nn.Module, emb: torch.Tensor, adaln_lora: torch.Tensor | None, chunks: int
                      ) -> tuple[torch.Tensor, ...]:
    """`adaln(emb)` for the time embedding emb [B, Tm, D] (Tm = 1 or T'), plus the first chunks*D features of the
    AdaLN-LoRA term, split into `chunks` tensors [B, Tm, 1, D] that broadcast over the S tokens of a frame:
    (shift, scale, gate) for a sub-block, (shift, scale) for the final layer."""
    modulation = adaln(emb)
    if adaln_lora is not None:
        modulation = modulation + adaln_lora[..., : chunks * emb.shape[-1]]
    return modulation.unsqueeze(2).chunk(chunks, dim=-1)


class AdaLNSubBlock(nn.Module):
    """x + gate * block(LayerNorm(x) * (1 + scale) + shift), the modulation coming from the time embedding."""

    def __init__(self, block_type: str, channels: int, context_dim: int, num_heads: int, mlp_ratio: float,
                 use_adaln_lora: bool, adaln_lora_dim: int, backend: str):
        super().__init__()
        self.block_type = block_type
        if block_type == "fa":
            self.block = AttentionBlock(channels, None, num_heads, backend)
        elif block_type == "ca":
            self.block = AttentionBlock(channels, context_dim, num_heads, backend)
        elif block_type == "mlp":
            self.block = FeedForward(channels, int(channels * mlp_ratio))
        else:
            raise ValueError(f"AdaLNSubBlock: unknown block type {block_type!r}; expected 'fa', 'ca' or 'mlp'")
        self.norm_state = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = adaln_modulation(channels, 3, use_adaln_lora, adaln_lora_dim)

    def forward(self, x, emb, crossattn_emb, crossattn_mask, rope, adaln_lora) -> torch.Tensor:
        shift, scale, gate = modulation_chunks(self.adaLN_modulation, emb, adaln_lora, 3)
        h = modulated_layer_norm(x, self.norm_state, shift, scale)
        if self.block_type == "fa":
            h = self.block(h, rope=rope)
        elif self.block_type == "ca":
            h = self.block(h, crossattn_emb, crossattn_mask)
        else:
            h = self.block(h)
        return torch.addcmul(x, gate, h)


class TransformerBlock(nn.Module):
    """One DiT block `blockN`: adds the extra position embedding, then FA -> CA -> MLP (`blocks.0..2`)."""

    def __init__(self, channels: int, context_dim: int, num_heads: int, mlp_ratio: float, use_adaln_lora: bool,
                 adaln_lora_dim: int, backend: str):
        super().__init__()
        self.blocks = nn.ModuleList(
            AdaLNSubBlock(t, channels, context_dim, num_heads, mlp_ratio, use_adaln_lora, adaln_lora_dim, backend)
            for t in ("fa", "ca", "mlp")
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor, crossattn_emb: torch.Tensor,
                crossattn_mask: torch.Tensor | None = None, rope_cos: torch.Tensor | None = None,
                rope_sin: torch.Tensor | None = None, adaln_lora: torch.Tensor | None = None,
                extra_pos_emb: torch.Tensor | None = None) -> torch.Tensor:
        # Plain tensor arguments (no containers) so that FSDP2 casting and activation checkpointing see them all.
        if extra_pos_emb is not None:
            x = x + extra_pos_emb
        rope = (rope_cos, rope_sin) if rope_cos is not None else None
        for block in self.blocks:
            x = block(x, emb, crossattn_emb, crossattn_mask, rope, adaln_lora)
        return x


def final_layer(x: torch.Tensor, emb: torch.Tensor, adaln_lora: torch.Tensor | None, norm: nn.LayerNorm,
                adaln: nn.Module, linear: nn.Linear) -> torch.Tensor:
    """The final layer of both families: AdaLN (shift, scale) norm, then the Linear to patch pixels."""
    shift, scale = modulation_chunks(adaln, emb, adaln_lora, 2)
    return linear(modulated_layer_norm(x, norm, shift, scale))


class FinalLayer(nn.Module):
    """`final_layer` under the official Cosmos-1.0 names (`norm_final`, `linear`, `adaLN_modulation`)."""

    def __init__(self, channels: int, out_features: int, use_adaln_lora: bool, adaln_lora_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(channels, out_features, bias=False)
        self.adaLN_modulation = adaln_modulation(channels, 2, use_adaln_lora, adaln_lora_dim)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, adaln_lora: torch.Tensor | None) -> torch.Tensor:
        return final_layer(x, emb, adaln_lora, self.norm_final, self.adaLN_modulation, self.linear)


# ----------------------------------------------------------------------------------------------------- checks
def check_network_sizes(owner: str, sizes: dict[str, int], attention_backend: str) -> None:
    """Every size a positive int, model_channels divisible by num_heads, a known attention backend (and Transformer
    Engine importable for "te", with a clear message when it is not)."""
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    model_channels, num_heads = sizes["model_channels"], sizes["num_heads"]
    if model_channels % num_heads:
        raise ValueError(f"{owner}: model_channels {model_channels} not divisible by num_heads {num_heads}")
    if attention_backend not in ATTENTION_BACKENDS:
        raise ValueError(f"{owner}: attention_backend must be one of {ATTENTION_BACKENDS}, got {attention_backend!r}")
    if attention_backend == "te":
        te_backend.require()


def check_latent_input(owner: str, x: torch.Tensor, in_channels: int, patch_temporal: int, patch_spatial: int,
                       channels_note: str = "") -> None:
    """x must be [B, in_channels, T, H, W] with T, H, W divisible by the patch size."""
    if x.ndim != 5:
        raise ValueError(f"{owner}: x must be [B,C,T,H,W], got shape {tuple(x.shape)}")
    _, C, T, H, W = x.shape
    if C != in_channels:
        raise ValueError(f"{owner}: x has {C} channels, the net was built with in_channels={in_channels}"
                         + channels_note)
    if T % patch_temporal or H % patch_spatial or W % patch_spatial:
        raise ValueError(f"{owner}: x size (T={T}, H={H}, W={W}) must be divisible by the patch size "
                         f"(t={patch_temporal}, h=w={patch_spatial})")


def check_context(owner: str, name: str, context: torch.Tensor, batch: int, width: int, length: str) -> None:
    """A context (text or image embeddings) must be [batch, length, width]."""
    if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != width:
        raise ValueError(f"{owner}: {name} must be [B={batch}, {length}, {width}], got {tuple(context.shape)}")


# ----------------------------------------------------------------------------------------------------- the network
@dataclass
class BlockInputs:
    """Everything the transformer blocks need besides the tokens, from `forward_before_blocks`.

    x: tokens [B, T', S, D]; emb: normalized time embedding [B, 1 or T', D]; adaln_lora: [B, 1 or T', 3D] | None;
    crossattn_emb [B, M, Dc]; crossattn_mask: bool [B,1,1,M] | None; rope_cos/rope_sin: [B|1, T'*S, head_dim]
    (rope_sin holds [-sin | sin], see apply_rope);
    extra_pos_emb: [1, T', S, D] | None; input_shape: (B, C, T, H, W) of the network input.
    """

    x: torch.Tensor
    emb: torch.Tensor
    adaln_lora: torch.Tensor | None
    crossattn_emb: torch.Tensor
    crossattn_mask: torch.Tensor | None
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor
    extra_pos_emb: torch.Tensor | None
    input_shape: tuple[int, int, int, int, int]

    def block_kwargs(self) -> dict:
        return dict(
            emb=self.emb,
            crossattn_emb=self.crossattn_emb,
            crossattn_mask=self.crossattn_mask,
            rope_cos=self.rope_cos,
            rope_sin=self.rope_sin,
            adaln_lora=self.adaln_lora,
            extra_pos_emb=self.extra_pos_emb,
        )


class GeneralDIT(nn.Module):
    """Cosmos-1.0 GeneralDIT ("FA-CA-MLP" blocks, 3D RoPE, AdaLN-LoRA), built from plain arguments.

    Args:
        max_img_h, max_img_w, max_frames: largest latent size (sets the RoPE/position tables; 7B: 240, 240, 128).
        in_channels: latent channels entering the net (16; 17 for video2world, whose condition-mask channel the
            diffusion model concatenates). The padding-mask channel is added here when concat_padding_mask.
        out_channels: predicted channels (16).
        patch_spatial, patch_temporal: patch size (2, 1).
        model_channels, num_blocks, num_heads, mlp_ratio: width, depth, heads, MLP expansion.
        crossattn_emb_channels: text embedding width (T5-XXL: 1024).
        use_cross_attn_mask: mask padded text tokens in cross-attention. Off in the official models (they attend to
            the zero-padded T5 embeddings); turn on only for networks trained with it.
        use_adaln_lora, adaln_lora_dim: AdaLN-LoRA (official: True, 256).
        affline_emb_norm: RMSNorm on the time embedding (official: True; `affline` is the official spelling).
        rope_{h,w,t}_extrapolation_ratio: NTK factors of the 3D RoPE (7B: 1, 1, 2).
        extra_per_block_abs_pos_emb: learnable per-axis absolute position embedding added in every block.
        extra_{h,w,t}_extrapolation_ratio: accepted for config compatibility; the learnable embedding crops.
        base_fps: frame rate at which RoPE time positions are frame indices (24).
        attention_backend: "torch" (SDPA, any device) or "te" (Transformer Engine kernels on CUDA tensors).
    """

    def __init__(
        self,
        max_img_h: int, max_img_w: int, max_frames: int, in_channels: int, out_channels: int,
        patch_spatial: int = 2, patch_temporal: int = 1, concat_padding_mask: bool = True,
        model_channels: int = 4096, num_blocks: int = 28, num_heads: int = 32, mlp_ratio: float = 4.0,
        crossattn_emb_channels: int = 1024, use_cross_attn_mask: bool = False,
        use_adaln_lora: bool = True, adaln_lora_dim: int = 256, affline_emb_norm: bool = True,
        rope_h_extrapolation_ratio: float = 1.0, rope_w_extrapolation_ratio: float = 1.0,
        rope_t_extrapolation_ratio: float = 1.0, extra_per_block_abs_pos_emb: bool = True,
        extra_h_extrapolation_ratio: float = 1.0, extra_w_extrapolation_ratio: float = 1.0,
        extra_t_extrapolation_ratio: float = 1.0, base_fps: float = 24.0, attention_backend: str = "torch",
    ):
        super().__init__()
        check_network_sizes("GeneralDIT", dict(
            max_img_h=max_img_h, max_img_w=max_img_w, max_frames=max_frames, in_channels=in_channels,
            out_channels=out_channels, patch_spatial=patch_spatial, patch_temporal=patch_temporal,
            model_channels=model_channels, num_blocks=num_blocks, num_heads=num_heads,
            crossattn_emb_channels=crossattn_emb_channels,
        ), attention_backend)
        del extra_h_extrapolation_ratio, extra_w_extrapolation_ratio, extra_t_extrapolation_ratio
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
        self.use_cross_attn_mask = use_cross_attn_mask
        self.use_adaln_lora = use_adaln_lora
        self.attention_backend = attention_backend
        len_h, len_w, len_t = max_img_h // patch_spatial, max_img_w // patch_spatial, max_frames // patch_temporal

        self.x_embedder = PatchEmbed(
            in_channels + int(concat_padding_mask), model_channels, patch_spatial, patch_temporal
        )
        self.pos_embedder = RopePosition3D(
            model_channels // num_heads, len_h, len_w, len_t,
            rope_h_extrapolation_ratio, rope_w_extrapolation_ratio, rope_t_extrapolation_ratio, base_fps,
        )
        self.extra_pos_embedder = (
            LearnablePosEmbAxis(model_channels, len_h, len_w, len_t) if extra_per_block_abs_pos_emb else None
        )
        self.t_embedder = nn.Sequential(Timesteps(model_channels), TimestepEmbedding(model_channels, use_adaln_lora))
        self.blocks = nn.ModuleDict(
            {
                f"block{i}": TransformerBlock(
                    model_channels, crossattn_emb_channels, num_heads, mlp_ratio, use_adaln_lora, adaln_lora_dim,
                    attention_backend,
                )
                for i in range(num_blocks)
            }
        )
        self.final_layer = FinalLayer(
            model_channels, patch_spatial * patch_spatial * patch_temporal * out_channels, use_adaln_lora,
            adaln_lora_dim,
        )
        self.affline_norm = RMSNorm(model_channels, eps=1e-6) if affline_emb_norm else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Official initialization of every parameter and buffer: xavier Linears, N(0, 0.02) time MLP, zero AdaLN
        outputs, unit norms, truncated-normal position tables, the RoPE positions.

        Does nothing on the meta device; after `net.to_empty(device=...)` call it again to get real values.
        """
        if self.x_embedder.proj[1].weight.is_meta:
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
            elif isinstance(module, LearnablePosEmbAxis):
                module.reset_parameters()
            elif isinstance(module, RopePosition3D):
                module.seq.copy_(torch.arange(len(module.seq), dtype=module.seq.dtype))
        time_mlp = self.t_embedder[1]
        for linear in (time_mlp.linear_1, time_mlp.linear_2):
            nn.init.normal_(linear.weight, std=0.02)
        for block in self.blocks.values():
            for sub_block in block.blocks:
                nn.init.zeros_(sub_block.adaLN_modulation[-1].weight)

    # ------------------------------------------------------------------------------------------------ pieces
    def prepare_embedded_sequence(
        self, x: torch.Tensor, fps: torch.Tensor | None = None, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """x [B,C,T,H,W] -> (tokens [B,T',S,D], (rope_cos, rope_sin), extra_pos_emb [1,T',S,D] | None)."""
        check_latent_input("GeneralDIT", x, self.in_channels, self.patch_temporal, self.patch_spatial)
        _, _, T, H, W = x.shape
        if self.concat_padding_mask:
            x = torch.cat([x, self.resize_padding_mask(padding_mask, x)], dim=1)
        tokens = self.x_embedder(x)
        grid = (T // self.patch_temporal, H // self.patch_spatial, W // self.patch_spatial)
        rope = self.pos_embedder(*grid, fps=fps)
        extra_pos_emb = None
        if self.extra_pos_embedder is not None:
            extra_pos_emb = self.extra_pos_embedder(*grid).to(tokens.dtype)
        return tokens, rope, extra_pos_emb

    @staticmethod
    def resize_padding_mask(padding_mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """Padding mask [B|1,1,H_px,W_px] (pixel size) -> [B,1,T,H,W] at the latent size (nearest), zeros if None."""
        return resize_padding_mask(padding_mask, x, "GeneralDIT")

    def forward_before_blocks(self, x: torch.Tensor, timesteps: torch.Tensor, crossattn_emb: torch.Tensor,
                              crossattn_mask: torch.Tensor | None = None, fps: torch.Tensor | None = None,
                              padding_mask: torch.Tensor | None = None) -> BlockInputs:
        """Embed the input, the time and the positions: everything the blocks need."""
        tokens, (rope_cos, rope_sin), extra_pos_emb = self.prepare_embedded_sequence(x, fps, padding_mask)
        B = x.shape[0]
        check_context("GeneralDIT", "crossattn_emb", crossattn_emb, B, self.crossattn_emb_channels, "L")
        emb, adaln_lora = embed_timesteps(self.t_embedder, self.affline_norm, timesteps, tokens.shape[1], B,
                                          "GeneralDIT")
        mask = None
        if self.use_cross_attn_mask and crossattn_mask is not None:
            if crossattn_mask.shape != crossattn_emb.shape[:2]:
                raise ValueError(f"GeneralDIT: crossattn_mask must be [B, L] = {tuple(crossattn_emb.shape[:2])}, "
                                 f"got {tuple(crossattn_mask.shape)}")
            mask = crossattn_mask.bool()[:, None, None, :]
        return BlockInputs(
            x=tokens, emb=emb, adaln_lora=adaln_lora, crossattn_emb=crossattn_emb.to(tokens.dtype),
            crossattn_mask=mask, rope_cos=rope_cos, rope_sin=rope_sin, extra_pos_emb=extra_pos_emb,
            input_shape=tuple(x.shape),
        )

    def forward_blocks(
        self,
        x: torch.Tensor,
        inputs: BlockInputs,
        block_residuals: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run the blocks on tokens x [B,T',S,D]; `block_residuals[name]` ([B,T',S,D]) is added after block `name`."""
        kwargs = inputs.block_kwargs()
        for name, block in self.blocks.items():
            x = block(x, **kwargs)
            if block_residuals is not None and name in block_residuals:
                x = x + block_residuals[name]
        return x

    def decode_output(self, x: torch.Tensor, inputs: BlockInputs) -> torch.Tensor:
        """Final AdaLN layer and unpatchify: tokens [B,T',S,D] -> [B, C_out, T, H, W]."""
        x = self.final_layer(x, inputs.emb, inputs.adaln_lora)  # [B, T', S, ps*ps*pt*C_out]
        return unpatchify(x, inputs.input_shape, self.patch_temporal, self.patch_spatial)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, crossattn_emb: torch.Tensor,
                crossattn_mask: torch.Tensor | None = None, fps: torch.Tensor | None = None,
                padding_mask: torch.Tensor | None = None, block_residuals: dict[str, torch.Tensor] | None = None,
                image_size: torch.Tensor | None = None) -> torch.Tensor:
        """x [B,C,T,H,W], timesteps [B] or [B,T'], crossattn_emb [B,L,Dc] -> [B,C_out,T,H,W].

        `block_residuals` ({"blockN": [B,T',S,D]}) are added after the named blocks (ControlNet injection).
        `image_size` is accepted and unused, as in the official Cosmos-1.0 networks.
        """
        del image_size
        inputs = self.forward_before_blocks(x, timesteps, crossattn_emb, crossattn_mask, fps, padding_mask)
        tokens = self.forward_blocks(inputs.x, inputs, block_residuals)
        return self.decode_output(tokens, inputs)
