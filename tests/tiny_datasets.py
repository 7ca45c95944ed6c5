"""Tiny datasets in our layout for tests: a few short clips of a red square moving right (a test helper).

    root = make_tiny_dataset(tmp_path)            # videos/, metas/, t5_xxl/*.safetensors (D = 8)
    t5_dir = make_tiny_t5(tmp_path / "t5")        # a random 1-layer T5 encoder (D = 16) with a word-level tokenizer
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
