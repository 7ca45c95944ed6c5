"""The CPU demo on the Cosmos-2.5 path: an edge branch post-trained on the shipped tiny 2.5 base (docs/DATASETS.md).

    python scripts/train.py -- experiment=demo_edge_2p5_tiny checkpoint.load_path=assets/demo_2p5/base_ema_bf16.pt
    python scripts/demo_report.py --experiment demo_edge_2p5_tiny \
        --job outputs/cosmos_transfer/demo_2p5/demo_edge_2p5_tiny

Transfer2.5 post-training in miniature, as experiments/demo.py is Transfer1's: a frozen, pretrained tiny Cosmos25DiT
base (`demo_base_2p5_tiny` below, a Predict2.5-style video2world net on rectified flow, trained once by
scripts/pretrain_demo_base.py --family 2.5 and shipped as assets/demo_2p5/base_ema_bf16.pt in NVIDIA's 2.5 layout)
plus one VACE control branch (Cosmos25ControlDiT: its blocks start as copies of the base's, before/after_proj at
zero) fed with the Canny edges of the video. The base file is the load path as it is, as NVIDIA's Predict2.5 files
are: `checkpoint.load_path` starts the branch from the base's blocks (checkpoints/transfer2_5.model_weights), so no
conversion step (convert_checkpoint.py --new-control is Transfer1's). The tokenizer, data and sizes are the
Transfer1 demo's (the DCT tokenizer standardized per channel, the demo dataset at 17 frames x 32 x 32 with MiniLM
captions: 5 x 8 x 8 = 320 tokens of 24 values per clip), so the two families' demos compare; what is the 2.5
family's is the net (NVIDIA's 2.5 names, the text through `crossattn_proj` as Reason1's is in the 2B, AdaLN-LoRA),
the objective (rectified flow, shift 5, logit-normal times, velocity loss) and UniPC sampling.
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.checkpoints.transfer2_5 import NEW_BRANCH_KEY_PATTERNS
from cosmos_transfer.config.lazy import LazyDict
from experiments._demo_latents import _LATENT_MEAN, _LATENT_STD

_TOKENIZER = dict(latent_mean=_LATENT_MEAN, latent_std=_LATENT_STD)
_DATA = dict(num_frames=17, resolution=[32, 32], hint_keys=["edge"], text_embedding_folder="minilm_l6",
             text_embedding_length=40, text_embedding_dim=384)
# 24 DCT channels x 5 x 8 x 8, patch 1. The MiniLM captions (40 x 384) go through crossattn_proj to the 192-wide
# cross-attention, as the 2B projects Reason1's 100,352 to 1024.
_NET = dict(in_channels=24, out_channels=24, patch_spatial=1, model_channels=192, num_blocks=2, num_heads=3,
            max_img_h=32, max_img_w=32, max_frames=8, use_crossattn_projection=True, crossattn_proj_in_channels=384,
            crossattn_emb_channels=192, adaln_lora_dim=64)
# The AdaLN modulation and time embedding at 1/20 of the rate, as the Transfer1 demo (experiments/demo.py: the
# zero-initialized gates otherwise grow ~100x within 100 steps at lr 1e-3). The branch has no time embedding of its
# own (it uses the frozen base's): its blocks' modulation only.
_LR_MULTIPLIERS = {"*adaln_modulation*": 0.05, "*t_embedder*": 0.05}
_BRANCH_LR_MULTIPLIERS = {"*adaln_modulation*": 0.05}

# The base: what scripts/pretrain_demo_base.py --family 2.5 trains once and ships as assets/demo_2p5/.
DEMO_BASE_2P5_TINY = LazyDict(
    dict(
        defaults=[
            {"override /model": "predict2p5"},
            {"override /net": "tiny_2p5"},
            {"override /tokenizer": "dct"},
            {"override /ema": "power"},
            {"override /data_train": "demo"},
            {"override /data_val": "demo"},
            {"override /scheduler": "lambdalinear"},
            {"override /callbacks": "loss_line"},
            "_self_",
        ],
        job=dict(project="cosmos_transfer", group="demo_2p5", name="demo_base_2p5_tiny"),
        model=dict(net=_NET, tokenizer=_TOKENIZER),
        dataloader_train=dict(batch_size=4, dataset=dict(_DATA, hint_keys=[])),
        dataloader_val=dict(batch_size=1, dataset=dict(_DATA, hint_keys=[])),
        optimizer=dict(lr=1e-3, weight_decay=0.01),
        scheduler=dict(warm_up_steps=[100], f_start=[0.1]),
        trainer=dict(max_iter=3000, validation_iter=1000, validation_num_batches=2, sample_num_steps=12,
                     sample_guidance=0.0, seed=0, lr_multipliers=_LR_MULTIPLIERS),
        checkpoint=dict(save_iter=1000, keep_last_k=1),
    )
)

# The edge branch on that base (the base frozen, only control_embedder and control_blocks learn): one control block
# per base block (vace_block_every_n 1), the edge latents padded to 24 channels (num_max_modalities 1).
DEMO_EDGE_2P5_TINY = LazyDict(
    dict(
        defaults=[
            {"override /model": "transfer2p5"},
            {"override /net": "tiny_transfer_2p5"},
            {"override /hint_key": "control_input_edge"},
            {"override /tokenizer": "dct"},
            {"override /ema": "power"},
            {"override /data_train": "demo"},
            {"override /data_val": "demo"},
            {"override /scheduler": "lambdalinear"},
            {"override /callbacks": "loss_line"},
            "_self_",
        ],
        job=dict(project="cosmos_transfer", group="demo_2p5", name="demo_edge_2p5_tiny"),
        model=dict(net=dict(_NET, vace_block_every_n=1, num_max_modalities=1), tokenizer=_TOKENIZER,
                   finetune_base=False),
        dataloader_train=dict(batch_size=2, dataset=_DATA),
        dataloader_val=dict(batch_size=1, dataset=_DATA),
        optimizer=dict(lr=1e-3, weight_decay=0.01),
        scheduler=dict(warm_up_steps=[20], f_start=[0.1]),
        trainer=dict(max_iter=1000, logging_iter=50, validation_iter=500, validation_num_batches=2,
                     sample_num_steps=12, sample_guidance=0.0, seed=0, lr_multipliers=_BRANCH_LR_MULTIPLIERS),
        # A base-only file holds no weights of the branch's own new layers: they keep their (zero) initialization.
        checkpoint=dict(save_iter=500, keep_last_k=2, allowed_missing_keys=list(NEW_BRANCH_KEY_PATTERNS)),
    )
)

# The names this file registers, written out: the experiment index reads them without running the file.
EXPERIMENT_NAMES = ["demo_base_2p5_tiny", "demo_edge_2p5_tiny"]
cs = ConfigStore.instance()
cs.store(group="experiment", package="_global_", name="demo_base_2p5_tiny", node=DEMO_BASE_2P5_TINY)
cs.store(group="experiment", package="_global_", name="demo_edge_2p5_tiny", node=DEMO_EDGE_2P5_TINY)
