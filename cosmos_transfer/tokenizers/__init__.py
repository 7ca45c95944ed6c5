"""Video tokenizers: the interface (base.VideoTokenizer), the light PixelTokenizer, and the Cosmos CV8x8x8
tokenizer (our network in cosmos_cv8x8x8.py, the official TorchScript files through jit.py)."""

from cosmos_transfer.tokenizers.base import VideoTokenizer, hide_from_state_dict
from cosmos_transfer.tokenizers.pixel import PixelTokenizer

__all__ = ["VideoTokenizer", "PixelTokenizer", "hide_from_state_dict"]
