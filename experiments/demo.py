"""The CPU demo: `make demo` post-trains an edge branch on the shipped tiny base, as users post-train the 7B.

    python scripts/convert_checkpoint.py to-ours assets/demo/base_model.pt \
        outputs/cosmos_transfer/demo/demo_edge_init.safetensors --new-control edge --num-control-blocks 2
    torchrun --standalone --nproc_per_node=2 scripts/train.py --config=configs/train.py -- experiment=demo_edge_tiny \
        checkpoint.load_path=outputs/cosmos_transfer/demo/demo_edge_init.safetensors
    python scripts/demo_report.py      # inference.py + evaluate.py on the validation clips, control on and off

Edge-control post-training as Cosmos-Transfer1 does it, in miniature (docs/TRAINING.md shows the same commands for
the 7B): a frozen, pretrained tiny GeneralDIT base (`demo_base_tiny` below, trained once by
scripts/pretrain_demo_base.py and shipped as assets/demo/base_model.pt in NVIDIA's layout) plus one ControlNet branch
fed with the Canny edges of the video (ControlDiffusionModel; the branch starts as a copy of the base's blocks, its own
new layers at zero), the DCT tokenizer (4x4 pixels x 4 frames per latent pixel, kept to their lowest 2x2x2
frequencies: 24 channels), and the synthetic demo dataset (datasets/demo, made by scripts/make_demo_dataset.py:
coloured shapes moving over textures, MiniLM caption embeddings of 40 x 384), read at 32 x 32. Outputs in
outputs/cosmos_transfer/demo/demo_edge_tiny: checkpoints/, metrics.jsonl, tensorboard/, samples/ (generated mp4 and a
control | generated | ground-truth GIF every validation), demo_report/. Rerunning the command resumes from the latest
checkpoint (`make clean-demo` first after changing this file).

Why these sizes: the network's output per token is a linear map of its `model_channels` features, so a token must
carry at most model_channels values (tests/integration/test_demo_experiment.py); values the net cannot predict stay noise after
sampling. The tokenizer compresses, as Cosmos' does (theirs 96x, this one 8x): with the uncompressed PixelTokenizer a
token held 192 raw pixel values, mostly fine detail that a tiny net trained for minutes cannot predict, and the
samples stayed grainy, which Canny reads as edges everywhere (BENCHMARKS.md). 17 frames x 32 x 32 -> 5 x 8 x 8 =
320 tokens per clip.
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyDict
from cosmos_transfer.networks.dit_ctrl import NEW_BRANCH_KEY_PATTERNS
from experiments._demo_latents import _LATENT_MEAN, _LATENT_STD

# The demo dataset's text embeddings (cosmos_transfer/data/demo.py): all-MiniLM-L6-v2, 40 tokens x 384.
_TEXT = dict(text_embedding_folder="minilm_l6", text_embedding_length=40, text_embedding_dim=384)
_DATA = dict(num_frames=17, resolution=[32, 32], hint_keys=["edge"], **_TEXT)
# 17 frames x 32 x 32 -> 24 channels x 5 x 8 x 8 latents; patch 1: 320 tokens of 24 values per clip.
# Blocks of the edge branch (copies of the base's first blocks); `make demo` converts the base with the same number.
_CONTROL_BLOCKS = 2
# The DCT tokenizer's per-channel latent statistics (how they were measured: experiments/_demo_latents.py).
_TOKENIZER = dict(latent_mean=_LATENT_MEAN, latent_std=_LATENT_STD)
_NET = dict(in_channels=24, out_channels=24, patch_spatial=1, model_channels=192, num_heads=3, max_img_h=32,
            max_img_w=32, crossattn_emb_channels=384)

DEMO_EDGE_TINY = LazyDict(
    dict(
        defaults=[
            {"override /model": "diffusion"},
            {"override /net": "tiny"},
            {"override /net_ctrl": "tiny"},
            {"override /hint_key": "control_input_edge"},
            {"override /tokenizer": "dct"},
            {"override /ema": "power"},
            {"override /data_train": "demo"},
            {"override /data_val": "demo"},
            {"override /scheduler": "lambdalinear"},
            {"override /callbacks": "loss_line"},
            "_self_",
        ],
        job=dict(project="cosmos_transfer", group="demo", name="demo_edge_tiny"),
        model=dict(
            _target_="cosmos_transfer.diffusion.model_ctrl.ControlDiffusionModel",
            net=_NET,
            tokenizer=_TOKENIZER,
            # The hint MLP: one hidden layer of 256 instead of NVIDIA's seven narrow ones (16, 16, 32, 32, 96, 96, 256,
            # whose 16-wide start squeezes the 24-channel hint): the branch learns the edges faster in 1,000 steps.
            # Measured in 1,000-step pilots (BENCHMARKS.md, issue 17): Edge F1 0.384 with [256] (0.384 with [512]),
            # 0.352 with NVIDIA's widths x4; NVIDIA's own gave 0.329 in `make demo` (all at 12 sampling steps).
            net_ctrl=dict(hint_channels=24, num_control_blocks=_CONTROL_BLOCKS, hint_block_channels=[256]),
            # Post-training as Cosmos-Transfer1 does it: the base (assets/demo/base_model.pt, given as
            # checkpoint.load_path after convert_checkpoint.py --new-control edge) stays frozen, only the branch
            # learns. (It stays in float32: bf16 matmuls are slower than fp32 ones on most CPUs.)
            finetune_base=False,
            # The branch learns where the layout is decided: noise levels around 1-10 (x sqrt(5 latent frames): a median
            # sigma of 3.3). Below ~0.5 the noisy input already holds the outlines and the frozen base denoises them
            # alone (its Edge F1 at sigma 0.1 is the same with the control on or off). Measured (BENCHMARKS.md, issue
            # 17): Edge F1 0.311 with (0.4, 1.0), 0.302 with (-0.4, 1.4), 0.283 with the base's old (-1.2, 1.2).
            p_mean=0.4,
            p_std=1.0,
        ),
        dataloader_train=dict(batch_size=2, dataset=_DATA),
        dataloader_val=dict(batch_size=1, dataset=_DATA),
        optimizer=dict(lr=1e-3, weight_decay=0.01),
        scheduler=dict(warm_up_steps=[20], f_start=[0.1]),
        trainer=dict(
            max_iter=1000,
            validation_iter=500,
            validation_num_batches=2,
            sample_num_steps=12,
            sample_guidance=0.0,
            seed=0,
            # The AdaLN modulation (shift, scale, gate of every sub-block, and the time MLP's AdaLN-LoRA terms) at
            # 1/20 of the rate: at the full 1e-3 the zero-initialized gates grow ~100x within 100 steps, and the
            # residual stream with them (to ~1000), which starves the low-noise denoising the samples need.
            # Measured on this experiment: validation MSE at 1,000 steps 0.577 without, 0.174 with (BENCHMARKS.md).
            # With lora=control the branch's modulation is frozen: the trainer then leaves these out and says so.
            lr_multipliers={"*adaLN_modulation*": 0.05, "*t_embedder*": 0.05},
        ),
        # The converted base holds no weights of the branch's own new layers: they keep their (zero) initialization.
        checkpoint=dict(save_iter=500, keep_last_k=2, allowed_missing_keys=list(NEW_BRANCH_KEY_PATTERNS)),
    )
)
ConfigStore.instance().store(group="experiment", package="_global_", name="demo_edge_tiny", node=DEMO_EDGE_TINY)

# The demo's base (a text2world net on the same data, no control): what scripts/pretrain_demo_base.py trains once and
# ships as assets/demo/base_model.pt, as NVIDIA ships the Cosmos base that users post-train their branches on.
DEMO_BASE_TINY = LazyDict(
    dict(
        defaults=[
            {"override /model": "diffusion"},
            {"override /net": "tiny"},
            {"override /tokenizer": "dct"},
            {"override /ema": "power"},
            {"override /data_train": "demo"},
            {"override /data_val": "demo"},
            {"override /scheduler": "lambdalinear"},
            {"override /callbacks": "loss_line"},
            "_self_",
        ],
        job=dict(project="cosmos_transfer", group="demo", name="demo_base_tiny"),
        # Wider than the branch's (-1.2, 1.2): the base must also learn the coarse layout at high noise. With (-1.2, 1.2)
        # only ~11% of its training noise levels were above 3 and its error there stayed ~1 (BENCHMARKS.md, issue 17);
        # (-0.8, 1.4) doubles that share and keeps ~12% below 0.2 for the last denoising steps.
        model=dict(net=_NET, tokenizer=_TOKENIZER, p_mean=-0.8, p_std=1.4),
        dataloader_train=dict(batch_size=4, dataset=dict(_DATA, hint_keys=[])),
        dataloader_val=dict(batch_size=1, dataset=dict(_DATA, hint_keys=[])),
        optimizer=dict(lr=1e-3, weight_decay=0.01),
        scheduler=dict(warm_up_steps=[100], f_start=[0.1]),
        trainer=dict(
            max_iter=8000,  # what scripts/pretrain_demo_base.py runs (--iters)
            validation_iter=1000,
            validation_num_batches=2,
            sample_num_steps=12,
            sample_guidance=0.0,
            seed=0,
            lr_multipliers={"*adaLN_modulation*": 0.05, "*t_embedder*": 0.05},
        ),
        checkpoint=dict(save_iter=1000, keep_last_k=1),
    )
)
ConfigStore.instance().store(group="experiment", package="_global_", name="demo_base_tiny", node=DEMO_BASE_TINY)
