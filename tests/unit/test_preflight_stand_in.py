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
