"""Tiny datasets in our layout for tests: a few short clips of a red square moving right (a test helper).

    root = make_tiny_dataset(tmp_path)            # videos/, metas/, t5_xxl/*.safetensors (D = 8)
    t5_dir = make_tiny_t5(tmp_path / "t5")        # a random 1-layer T5 encoder (D = 16) with a word-level tokenizer
    reason1_dir = make_tiny_reason1(tmp_path / "r1")   # a random 3-layer Qwen2.5-VL (Reason1's kind; D = 3 x 32)
    to_transfer2_5_layout(root)                   # captions/<stem>.json instead of metas/, no embeddings
    ds = VideoDataset(root, num_frames=5, resolution=(32, 64), text_embedding_length=16, text_embedding_dim=8)

Frame t of every clip shows the square at columns 4 + 2t .. 15 + 2t, so a test can tell which frames it got.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from cosmos_transfer.data.text_embeddings import save_text_embedding
from cosmos_transfer.video_io import write_video


def make_tiny_dataset(
    root,
    stems=("a", "b", "c"),
    num_frames: int = 12,
    size: tuple[int, int] = (32, 48),
    fps: float = 10.0,
    text_dim: int = 8,
    cosmos_pickles: bool = False,
    seed: int = 0,
) -> str:
    """Write the clips, captions and random text embeddings ([3 + i, text_dim] for the i-th clip) under root.

    cosmos_pickles=True writes the embeddings as Cosmos does (t5_xxl/<stem>.pickle holding [float16 array]).
    """
    rng = np.random.default_rng(seed)
    for n, stem in enumerate(stems):
        frames = np.full((num_frames, *size, 3), 90, np.uint8)
        for t in range(num_frames):
            frames[t, 8:20, 4 + 2 * t : 16 + 2 * t] = (220, 40, 40)
        write_video(os.path.join(root, "videos", stem + ".mp4"), frames, fps)
        os.makedirs(os.path.join(root, "metas"), exist_ok=True)
        with open(os.path.join(root, "metas", stem + ".txt"), "w", encoding="utf-8") as file:
            file.write(f"clip {stem}: a red square moves right\n")
        embedding = rng.standard_normal((3 + n, text_dim)).astype(np.float16)
        if cosmos_pickles:
            os.makedirs(os.path.join(root, "t5_xxl"), exist_ok=True)
            with open(os.path.join(root, "t5_xxl", stem + ".pickle"), "wb") as file:
                pickle.dump([embedding], file)
        else:
            save_text_embedding(os.path.join(root, "t5_xxl", stem + ".safetensors"), embedding, encoder="random",
                                max_length=16, caption=f"clip {stem}")  # fmt: skip
    return str(root)


_T5_WORDS = "a red green blue square circle moves left right up down over the background clip b c".split()


def make_tiny_t5(folder) -> str:
    """A randomly initialized 1-layer T5 encoder (d_model 16) with a word-level tokenizer, saved like a hub model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(_T5_WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(vocab), d_model=16, d_kv=4, num_heads=4, d_ff=32, num_layers=1)
    T5EncoderModel(config).save_pretrained(folder)
    return str(folder)


# ------------------------------------------------------------------------------------------ Cosmos-2.5 helpers
_REASON1_CHAT_TEMPLATE = (  # the shape of Qwen2-VL's template for text turns (content a string or a list of parts)
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_REASON1_WORDS = ("You are a helpful assistant who will provide prompts to an image generator. clip a b c: a red "
                  "square circle moves right left over the teal background")


def make_tiny_reason1(folder, num_layers: int = 3, hidden_size: int = 32) -> str:
    """A randomly initialized Qwen2.5-VL (the architecture of Cosmos-Reason1) with a byte-level BPE tokenizer, pad
    token <|endoftext|> and a Qwen-style chat template, saved like a hub model: embeddings of num_layers x
    hidden_size (3 x 32 = 96) per token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([_REASON1_WORDS], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    fast.chat_template = _REASON1_CHAT_TEMPLATE
    config = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=tokenizer.get_vocab_size(),
                         max_position_embeddings=1024, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
                         pad_token_id=fast.pad_token_id, bos_token_id=fast.pad_token_id,
                         eos_token_id=fast.eos_token_id),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden_size,
                           patch_size=2, spatial_merge_size=1, temporal_patch_size=1, fullatt_block_indexes=[0]),
    )
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


def to_transfer2_5_layout(root) -> str:
    """Turn a make_tiny_dataset folder into Transfer2.5's layout: captions/<stem>.json ({"caption": ...}) instead of
    metas/<stem>.txt, and no embeddings (prepare_dataset.py computes them)."""
    import json
    import shutil

    os.makedirs(os.path.join(root, "captions"), exist_ok=True)
    for name in sorted(os.listdir(os.path.join(root, "metas"))):
        with open(os.path.join(root, "metas", name), encoding="utf-8") as file:
            caption = file.read().strip()
        with open(os.path.join(root, "captions", name[: -len(".txt")] + ".json"), "w", encoding="utf-8") as file:
            json.dump({"caption": caption, "source": "test"}, file)
    shutil.rmtree(os.path.join(root, "metas"))
    shutil.rmtree(os.path.join(root, "t5_xxl"), ignore_errors=True)
    return str(root)
