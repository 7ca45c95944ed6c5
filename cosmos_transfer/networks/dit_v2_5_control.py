"""Cosmos25ControlDiT: the Cosmos-Transfer2.5 network, a Cosmos25DiT base with VACE-style control branches.

    control latents [B,c,T,H,W] --zero-pad to 128 ch | condition mask | padding mask--> `control_embedder` (130 ch)
    c = before_proj(control tokens) + base tokens (x_embedder output)        (control block 0 only)
    for control block i (a copy of base block i):  c = block(c);  hint_i = after_proj(c)
    base: for block k:  x = block(x);  if k = i * vace_block_every_n:  x = x + scale * hint_i
    (2B: 28 base blocks, vace_block_every_n 7 -> 4 control blocks feeding base blocks 0, 7, 14, 21)

The whole control branch runs before the base blocks: control block i sees only the base's patch embedding (through
block 0), not the base's block outputs. `before_proj` and `after_proj` are zero-initialized Linears with biases, so a
new branch changes nothing until it is trained. Parameter names are NVIDIA's (`control_embedder.proj.1.weight`,
`control_blocks.N.{before_proj,after_proj}.*`, and the block names of networks/dit_v2_5.py), so a released
`general/<modality>/*_ema_bf16.pt` (base and branch in one state dict) loads strictly (checkpoints/transfer2_5.py).

Several controls (NVIDIA's inference, `num_control_branches` N > 1 with `use_after_proj_for_multi_branch=False`):
branch b has its own `control_embedder.b` and `control_blocks_b` (each loaded from a single-control file); the
control latents are the N modalities concatenated on channels, split in N; the hints are the weighted sum
sum_b w_b * hint_{b,i} (no normalization), and a branch whose control latents are all zero contributes nothing.
Facts from nvidia-cosmos/cosmos-transfer2.5 @ 2ff49d07, `cosmos_transfer2/_src/transfer2/networks/
minimal_v4_lvg_dit_control_vace.py` (MinimalV4LVGControlVaceDiT.forward, ControlEncoderDiTBlock,
ControlAwareDiTBlock), `transfer2/models/vid2vid_model_control_vace_rectified_flow.py`
(copy_weights_to_control_branch: "first_n", base block i -> control block i; freeze_base_model; 
load_multi_branch_checkpoints), `transfer2/configs/vid2vid_transfer/experiment/experiment_list.py` (multi-control:
num_control_branches=4, use_after_proj_for_multi_branch=False).
Not built: NVIDIA's training-only variants (input_hint_block, separate_embedders, the multi-branch after_proj fusing
layer, condition_strategy "first_n", vace_has_mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cosmos_transfer.networks.dit import PatchEmbed
from cosmos_transfer.networks.dit_v2_5 import Block, BlockInputs, Cosmos25DiT


class ControlBlock(Block):
    """A control block: a base Block plus `after_proj` (its hint), and on block 0 `before_proj` (the control input)."""

    def __init__(self, *block_args, first: bool):
        super().__init__(*block_args)
        channels = block_args[0]
        if first:
            self.before_proj = nn.Linear(channels, channels)
        self.after_proj = nn.Linear(channels, channels)

    def forward(self, c: torch.Tensor, base_tokens: torch.Tensor | None = None, **block_kwargs
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(control tokens after this block, its hint `after_proj(c)`); block 0 starts from
        `before_proj(control embedding) + base_tokens`. One call for all of the block's layers, so that an FSDP2 unit
        or activation checkpointing around the block (trainer/parallelize.py) covers before_proj and after_proj."""
        if base_tokens is not None:
            c = self.before_proj(c) + base_tokens
        c = super().forward(c, **block_kwargs)
        return c, self.after_proj(c)


class Cosmos25ControlDiT(Cosmos25DiT):
    """Cosmos25DiT + control branches (NVIDIA's MinimalV4LVGControlVaceDiT).

    Args (besides Cosmos25DiT's):
        vace_block_every_n: one control block per this many base blocks; control block i feeds base block i*n
            (released 2B: 7 -> 4 control blocks).
        num_max_modalities: control latents are zero-padded to in_channels * num_max_modalities channels
            (released: 16 x 8 = 128; + condition mask + padding mask = 130 `control_embedder` inputs).
        num_control_branches: 1 (one modality: `control_blocks`, `control_embedder`) or N > 1 separate branches
            (`control_blocks_{b}`, `control_embedder.{b}`), combined by a weighted sum.
    """

    def __init__(self, *args, vace_block_every_n: int = 7, num_max_modalities: int = 8,
                 num_control_branches: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        for name, value in dict(vace_block_every_n=vace_block_every_n, num_max_modalities=num_max_modalities,
                                num_control_branches=num_control_branches).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Cosmos25ControlDiT: {name} must be a positive integer, got {value!r}")
        self.vace_block_every_n = vace_block_every_n
        self.num_control_branches = num_control_branches
        self.control_layers = list(range(0, self.num_blocks, vace_block_every_n))  # base blocks fed by the branch
        self.control_channels = self.in_channels * num_max_modalities
        embedder_channels = self.control_channels + 1 + int(self.concat_padding_mask)

        def embedder() -> PatchEmbed:
            return PatchEmbed(embedder_channels, self.model_channels, self.patch_spatial, self.patch_temporal)

        def branch() -> nn.ModuleList:
            return nn.ModuleList(ControlBlock(*self._block_args, first=i == 0) for i in range(len(self.control_layers)))

        if num_control_branches == 1:
            self.control_embedder = embedder()
            self.control_blocks = branch()
        else:
            self.control_embedder = nn.ModuleList(embedder() for _ in range(num_control_branches))
            for b in range(num_control_branches):
                setattr(self, f"control_blocks_{b}", branch())
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        super().init_weights()
        if not hasattr(self, "control_layers") or self.x_embedder.proj[1].weight.is_meta:
            return
        for block in self.modules():
            if isinstance(block, ControlBlock):
                for proj in (getattr(block, "before_proj", None), block.after_proj):
                    if proj is not None:
                        nn.init.zeros_(proj.weight)
                        nn.init.zeros_(proj.bias)

    def branches(self) -> list[nn.ModuleList]:
        """The control blocks of each branch, in order."""
        if self.num_control_branches == 1:
            return [self.control_blocks]
        return [getattr(self, f"control_blocks_{b}") for b in range(self.num_control_branches)]

    def embedders(self) -> list[nn.Module]:
        return [self.control_embedder] if self.num_control_branches == 1 else list(self.control_embedder)

    @torch.no_grad()
    def copy_base_to_control_blocks(self) -> None:
        """Start every branch from the base: control block i <- base block i (NVIDIA's "first_n" strategy);
        before_proj / after_proj stay as they are (zero for a new branch)."""
        for branch in self.branches():
            for i, control_block in enumerate(branch):
                missing, unexpected = control_block.load_state_dict(self.blocks[str(i)].state_dict(), strict=False)
                assert not unexpected and set(missing) <= {"before_proj.weight", "before_proj.bias",
                                                          "after_proj.weight", "after_proj.bias"}, (missing, unexpected)

    # ------------------------------------------------------------------------------------------------ pieces
    def _split_controls(self, control_latents: torch.Tensor | Sequence[torch.Tensor], shape: tuple[int, ...],
                        dtype: torch.dtype) -> list[torch.Tensor]:
        """The control latents of each branch, zero-padded to control_channels."""
        n = self.num_control_branches
        if isinstance(control_latents, torch.Tensor):
            if control_latents.ndim != 5 or control_latents.shape[1] % n:
                raise ValueError(f"Cosmos25ControlDiT: control latents must be [B, C, T, H, W] with C divisible by the "
                                 f"{n} branch(es) (the modalities concatenated), got {tuple(control_latents.shape)}")
            controls = list(control_latents.chunk(n, dim=1))
        else:
            controls = list(control_latents)
            if len(controls) != n:
                raise ValueError(f"Cosmos25ControlDiT: {len(controls)} control latents for {n} branch(es)")
        B, _, T, H, W = shape
        padded = []
        for b, control in enumerate(controls):
            if control.ndim != 5 or control.shape[0] != B or control.shape[2:] != (T, H, W) or \
                    control.shape[1] > self.control_channels:
                raise ValueError(f"Cosmos25ControlDiT: control latents of branch {b} must be [B={B}, <= "
                                 f"{self.control_channels}, T={T}, H={H}, W={W}], got {tuple(control.shape)}")
            control = control.to(dtype)
            pad = control.new_zeros(B, self.control_channels - control.shape[1], T, H, W)
            padded.append(torch.cat([control, pad], dim=1))
        return padded

    def _branch_weights(self, control_scale, grid: tuple[int, int, int, int]) -> list:
        """One weight per branch: a number, or a tensor over the token grid (B, T', H', W'): [B] per sample,
        [B, T', H', W'] or [B, T', H', W', 1] (NVIDIA's weight-map layout) per token; maps become [B, T', S, 1]."""
        n = self.num_control_branches
        if isinstance(control_scale, torch.Tensor) and control_scale.ndim == 0:
            control_scale = float(control_scale)
        if isinstance(control_scale, (int, float)):
            return [float(control_scale)] * n
        if isinstance(control_scale, torch.Tensor) and n > 1 and control_scale.ndim >= 1:
            control_scale = list(control_scale.unbind(0))  # one row per branch
        weights = list(control_scale) if not isinstance(control_scale, torch.Tensor) else [control_scale]
        if len(weights) != n:
            raise ValueError(f"Cosmos25ControlDiT: {len(weights)} control scales for {n} branch(es)")
        B, T, H, W = grid
        out = []
        for b, weight in enumerate(weights):
            if isinstance(weight, torch.Tensor) and weight.ndim > 0:
                if weight.ndim == 5 and weight.shape[-1] == 1:
                    weight = weight[..., 0]
                if weight.shape == (B,):
                    weight = weight.reshape(B, 1, 1, 1)
                elif weight.shape == (B, T, H, W):
                    weight = weight.reshape(B, T, H * W, 1)
                else:
                    raise ValueError(f"Cosmos25ControlDiT: the control scale of branch {b} must be a number, [B={B}] or"
                                     f" a map over the token grid [B, T', H', W'] = {[B, T, H, W]} (optionally with a "
                                     f"trailing 1), got shape {tuple(weight.shape)}")
            out.append(float(weight) if not isinstance(weight, torch.Tensor) else weight)
        return out

    def control_hints(self, control_latents, inputs: BlockInputs, condition_mask: torch.Tensor | None,
                      padding_mask: torch.Tensor | None, control_scale=1.0) -> list[torch.Tensor | float]:
        """Run every branch: the weighted hints [B, T', S, D] to add after base blocks control_layers[i].

        With several branches, one whose control latents are all zero is skipped (NVIDIA's `has_hint`); with
        gradients enabled it runs and is multiplied by zero, so that its parameters get (zero) gradients as in
        NVIDIA's training. A single branch always runs (NVIDIA's single-branch path has no such check).
        """
        controls = self._split_controls(control_latents, inputs.input_shape, inputs.x.dtype)
        B, _, T, H, W = inputs.input_shape
        grid = (B, T // self.patch_temporal, H // self.patch_spatial, W // self.patch_spatial)
        weights = self._branch_weights(control_scale, grid)
        hints: list = [0.0] * len(self.control_layers)
        kwargs = inputs.block_kwargs()
        for branch, embedder, control, weight in zip(self.branches(), self.embedders(), controls, weights):
            active = self.num_control_branches == 1 or bool(control.any())  # NVIDIA checks only with several
            if not active and not torch.is_grad_enabled():
                continue
            # 1. control tokens from [control | condition mask | padding mask], plus the base tokens (block 0)
            c = self.embed_input(control, condition_mask, padding_mask, embedder)
            # 2. the control blocks, each giving the hint of its base block
            for i, block in enumerate(branch):
                c, hint = block(c, base_tokens=inputs.x if i == 0 else None, **kwargs)
                scale = weight.to(c.dtype) if isinstance(weight, torch.Tensor) else weight
                hints[i] = hints[i] + hint * (scale if active else 0.0)
        return hints

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        crossattn_emb: torch.Tensor,
        control_latents: torch.Tensor | Sequence[torch.Tensor],
        condition_mask: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        img_context_emb: torch.Tensor | None = None,
        control_scale: float | torch.Tensor | Sequence = 1.0,
    ) -> torch.Tensor:
        """As Cosmos25DiT.forward, plus control_latents ([B, c, T, H, W] with the branches' modalities concatenated on
        channels, or one tensor per branch) and control_scale (one number for all branches, or per branch a number,
        a [B] tensor or a weight map over the token grid [B, T', H', W']; see _branch_weights)."""
        inputs = self.forward_before_blocks(x, timesteps, crossattn_emb, condition_mask, fps, padding_mask,
                                            img_context_emb)
        hints = self.control_hints(control_latents, inputs, condition_mask, padding_mask, control_scale)
        hint_of_block = dict(zip(self.control_layers, hints))
        tokens = inputs.x
        kwargs = inputs.block_kwargs()
        for k, block in enumerate(self.blocks.values()):
            tokens = block(tokens, **kwargs)
            if k in hint_of_block:
                tokens = tokens + hint_of_block[k]
        return self.decode_output(tokens, inputs)
