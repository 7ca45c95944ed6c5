"""Video tokenizers: the interface (base.VideoTokenizer), the light PixelTokenizer and DCTTokenizer, and the Cosmos CV8x8x8
tokenizer (our network in cosmos_cv8x8x8.py, the official TorchScript files through jit.py)."""

from cosmos_transfer.tokenizers.base import VideoTokenizer, hide_from_state_dict
from cosmos_transfer.tokenizers.cosmos_cv8x8x8 import CausalVideoAutoencoder, CosmosCV8x8x8Tokenizer
from cosmos_transfer.tokenizers.dct import DCTTokenizer
from cosmos_transfer.tokenizers.jit import CosmosJITTokenizer, save_torchscript
from cosmos_transfer.tokenizers.pixel import PixelTokenizer

__all__ = [
    "VideoTokenizer",
    "PixelTokenizer",
    "DCTTokenizer",
    "CausalVideoAutoencoder",
    "CosmosCV8x8x8Tokenizer",
    "CosmosJITTokenizer",
    "save_torchscript",
    "hide_from_state_dict",
]
