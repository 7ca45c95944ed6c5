"""preflight's stand-in for a missing tokenizer gives the model its shapes and refuses to run, saying why."""

import pytest
import torch

from cosmos_transfer.preflight import _ShapeOnlyTokenizer


def test_shape_only_tokenizer_gives_shapes_and_refuses_to_encode_or_decode():
    tokenizer = _ShapeOnlyTokenizer(latent_channels=16, spatial_compression=8, temporal_compression=8)
    assert tokenizer.latent_num_frames(121) == 16
    for method in (tokenizer.encode, tokenizer.decode):
        with pytest.raises(RuntimeError, match="files are missing.*download the tokenizer"):
            method(torch.zeros(1, 3, 9, 16, 16))


def test_shape_only_tokenizer_counts_frames_in_chunks_as_the_real_one():
    """Cosmos' tokenizer encodes 121-frame chunks: 18 latent frames are 121 + 9 pixel frames, not 137 (the lengths
    the context-parallel check proposes come from this arithmetic)."""
    chunked = _ShapeOnlyTokenizer(latent_channels=16, spatial_compression=8, temporal_compression=8,
                                  pixel_chunk_duration=121)
    assert chunked.pixel_num_frames(18) == 130 and chunked.latent_num_frames(130) == 18
    with pytest.raises(ValueError, match="cannot tokenize 137 frames"):
        chunked.latent_num_frames(137)
