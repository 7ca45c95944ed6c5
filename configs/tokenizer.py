"""Option group `tokenizer` (package `model.tokenizer`): the frozen video tokenizer.

    pixel                  PixelTokenizer: 4x4 pixel patches folded into 48 channels, every frame kept
                           (17 x 64 x 64 video -> 48 x 17 x 16 x 16 latent); no weights, exact inverse. The net needs
                           in/out_channels=48 and max_frames >= the clip's frame count.
    dct                    DCTTokenizer: 4x4 pixels x 4 frames per latent pixel, kept to their 2x2x2 lowest DCT
                           frequencies (17 x 32 x 32 video -> 24 x 5 x 8 x 8 latent); no weights, lossy (8x), smooth
                           decoded patches. The demo's tokenizer. The net needs in/out_channels=24.
    cosmos_cv8x8x8         the released Cosmos-Tokenize1-CV8x8x8-720p TorchScript files (encoder.jit, decoder.jit,
                           mean_std.pt) from `model.tokenizer.checkpoint_dir`, by default
                           $COSMOS_CHECKPOINT_DIR/nvidia/Cosmos-Tokenize1-CV8x8x8-720p; bf16 on CUDA.
    cosmos_cv8x8x8_ours    our implementation of the same network, loading the same files' weights by name
                           (same latents; can be inspected or fine-tuned).
    cosmos_cv8x8x8_random  our network at a small width with seeded random weights (16 channels, 8x8x8): for tests.
    wan2pt1                the Wan2.1 VAE of the Cosmos-2.5 family (16 channels, 8x8 spatial, 4x temporal: 93 -> 24
                           latent frames) on diffusers' AutoencoderKLWan (`pip install -e '.[wan]'`), from NVIDIA's
                           tokenizer.pth at `model.tokenizer.checkpoint_path` (a file or its folder), by default
                           $COSMOS_CHECKPOINT_DIR/nvidia/Cosmos-Predict2.5-2B/tokenizer.pth; bf16 on CUDA.
    wan2pt1_random         the same network at a small width with seeded random weights: for tests.

Long videos are encoded in chunks of `pixel_chunk_duration` frames (121 -> 16 latent frames), at most
`max_enc_batch_size` chunks at a time (`max_dec_batch_size` when decoding).
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyCall as L

PIXEL_TOKENIZER = L("cosmos_transfer.tokenizers.pixel.PixelTokenizer")(
    spatial_compression=4,
    temporal_compression=1,
)

DCT_TOKENIZER = L("cosmos_transfer.tokenizers.dct.DCTTokenizer")(
    spatial_compression=4,
    temporal_compression=4,
    spatial_frequencies=2,
    temporal_frequencies=2,
)

# One 121-frame 704x1280 chunk at a time: an estimated 4-5 GB of bf16 activations in the encoder, which fits beside
# the 7B model on one GPU (8 at a time, the original's default, would need ~30 GB). Raise for throughput on big GPUs.
_CHUNKING = dict(pixel_chunk_duration=121, max_enc_batch_size=1, max_dec_batch_size=1)

COSMOS_CV8X8X8 = L("cosmos_transfer.tokenizers.jit.CosmosJITTokenizer")(
    checkpoint_dir=None,
    latent_channels=16,
    spatial_compression=8,
    temporal_compression=8,
    dtype="auto",
    **_CHUNKING,
)

COSMOS_CV8X8X8_OURS = L("cosmos_transfer.tokenizers.cosmos_cv8x8x8.CosmosCV8x8x8Tokenizer")(
    checkpoint_dir=None,
    load_weights=True,
    dtype="auto",
    **_CHUNKING,
)

COSMOS_CV8X8X8_RANDOM = L("cosmos_transfer.tokenizers.cosmos_cv8x8x8.CosmosCV8x8x8Tokenizer")(
    load_weights=False,
    channels=8,
    channels_mult=[1, 2, 2],
    num_res_blocks=1,
    attn_resolutions=[],
    seed=0,
    dtype="float32",
    **_CHUNKING,
)


# Wan2.1 VAE: a whole 93-frame clip per pass (NVIDIA encodes its 93 frames at once; the VAE is causal with a
# feature cache, so this is also what the released weights were trained on), one clip at a time.
_WAN_CHUNKING = dict(pixel_chunk_duration=93, max_enc_batch_size=1, max_dec_batch_size=1)

WAN2PT1 = L("cosmos_transfer.tokenizers.wan.WanVAETokenizer")(
    checkpoint_path=None,
    load_weights=True,
    dtype="auto",
    **_WAN_CHUNKING,
)

WAN2PT1_RANDOM = L("cosmos_transfer.tokenizers.wan.WanVAETokenizer")(
    load_weights=False,
    base_dim=4,
    seed=0,
    dtype="float32",
    **_WAN_CHUNKING,
)


def register() -> None:
    cs = ConfigStore.instance()
    for name, node in [
        ("pixel", PIXEL_TOKENIZER),
        ("dct", DCT_TOKENIZER),
        ("cosmos_cv8x8x8", COSMOS_CV8X8X8),
        ("cosmos_cv8x8x8_ours", COSMOS_CV8X8X8_OURS),
        ("cosmos_cv8x8x8_random", COSMOS_CV8X8X8_RANDOM),
        ("wan2pt1", WAN2PT1),
        ("wan2pt1_random", WAN2PT1_RANDOM),
    ]:
        cs.store(group="tokenizer", package="model.tokenizer", name=name, node=node)
