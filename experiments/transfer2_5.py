"""Cosmos-2.5 post-training: Transfer2.5-2B control branches, a Predict2.5-2B video2world base, and a tiny CPU demo.

    transfer2p5_2b_<modality>_posttrain   modality in edge, blur, depth, seg: the branch of NVIDIA's released
                                          nvidia/Cosmos-Transfer2.5-2B general/<modality>/*_ema_bf16.pt trained on
                                          your clips, its base frozen in bf16 (one GPU)
    transfer2p5_2b_joint_posttrain        edge + blur + depth + seg branches trained together (NVIDIA trains one
                                          modality per run), each hint dropped with probability 0.3
    predict2p5_2b_video2world_posttrain   the whole Cosmos-Predict2.5-2B base trained on your clips
    transfer2p5_tiny                      the Transfer2.5 model at CPU size on the demo data (tests, a first run)

Start from NVIDIA's files (docs/TRAINING.md, "Cosmos-Transfer2.5"): a released Transfer2.5 file holds the base and
its branch under NVIDIA's names, which are ours, so it is the load path as it is,
    checkpoint.load_path=checkpoints/nvidia/Cosmos-Transfer2.5-2B/general/edge/<uuid>_ema_bf16.pt
and the joint run loads one file made from the four with
    python scripts/convert_checkpoint.py to-ours general/edge/<uuid>_ema_bf16.pt joint.safetensors \
        --control edge=general/edge/... --control vis=general/blur/... --control depth=... --control seg=...

The settings are NVIDIA's where they have one: rectified flow (configs/model.py transfer2p5 / predict2p5), the
Wan2.1 VAE, 93 frames at 704 x 1280, Cosmos-Reason1 text (512 x 100,352, from scripts/prepare_dataset.py), AdamW at
lr 2^-14.5 ~ 4.3e-5 (their post-training uses ~5e-5 over 8 GPUs with gradient accumulation 4), 2,000 iterations
(docs/post-training_singleview.md of cosmos-transfer2.5). Blur is our hint key `vis` (NVIDIA's control_input_vis).
What differs: one GPU (FSDP over what you have) instead of 8 x 80 GB with context parallel 8, the frozen base in bf16,
and per-hint dropout for the joint run.

The tiny demo (`transfer2p5_tiny`): a 2-block, 64-channel Cosmos25ControlDiT with one control block per base block,
the DCT tokenizer and the demo dataset (datasets/demo, scripts/make_demo_dataset.py) at 17 frames x 32 x 32. The DCT
tokenizer, not a tiny random Wan2.1 VAE: it has no weights and no dependency (the Wan VAE needs diffusers, an
optional extra), costs nothing on two cores, and its latents decode to real pictures, so the generated demo video
means something; its 4x temporal compression (17 -> 5 frames) is the Wan VAE's. A random Wan VAE's latents would train
the same code but decode to noise. Its 5 latent frames do not split over context-parallel ranks: with
trainer.context_parallel_size=2 give the loaders 13 or 21 frames (scripts/train.py's checks name the lengths).
"""

from hydra.core.config_store import ConfigStore

from configs.hint_key import hint_key_node
from cosmos_transfer.config.lazy import LazyDict

cs = ConfigStore.instance()

# The 2.5 data: the `custom` loader with NVIDIA's clip length and size and Reason1 text (docs/DATASETS.md).
_DATA_2P5 = dict(num_frames=93, resolution=[704, 1280], text_embedding_folder="reason1", text_embedding_length=512,
                 text_embedding_dim=100352)
# Modalities as NVIDIA names them -> our hint keys.
MODALITIES = {"edge": "edge", "blur": "vis", "depth": "depth", "seg": "seg"}
_OPTIMIZER = dict(lr=2 ** (-14.5), weight_decay=0.1, betas=[0.9, 0.99], eps=1e-8)
# A plain loss line every logging_iter iterations (callbacks=loss_line): in a batch job's log, where no progress bar is.
_TRAINER = dict(max_iter=2000, logging_iter=50, activation_checkpointing="full", clip_grad_norm=1.0,
                sample_num_steps=35, sample_guidance=3.0, callbacks=dict(loss_line=dict(every=50)))
_DEFAULTS_2B = [
    {"override /callbacks": "loss_line"},
    {"override /tokenizer": "wan2pt1"},
    {"override /data_train": "custom"},  # set dataloader_train.dataset.root (and _val's)
    {"override /data_val": "custom"},
    {"override /optimizer": "fusedadamw"},
    {"override /scheduler": "lambdalinear"},
]


def transfer2p5_2b_experiment(name: str, modalities: list[str], hint_dropout_rate: float = 0.0) -> LazyDict:
    """Post-training of the Transfer2.5-2B branches of `modalities` on the frozen bf16 base."""
    keys = [MODALITIES[m] for m in modalities]
    net = dict(num_control_branches=len(keys))
    if len(keys) > 1:
        net["extra_image_context_dim"] = None  # NVIDIA's multi-control net has no image context
    settings = hint_key_node(*keys)
    experiment = dict(
        defaults=[{"override /model": "transfer2p5"}, {"override /net": "transfer2p5_2b"}, *_DEFAULTS_2B, "_self_"],
        job=dict(project="cosmos_transfer", group="transfer2p5_2b", name=name),
        model=dict(hint_keys=keys, hint_dropout_rate=hint_dropout_rate, finetune_base=False, base_dtype="bfloat16",
                   net=net),
        dataloader_train=dict(dataset=dict(_DATA_2P5, **settings["dataloader_train"]["dataset"])),
        dataloader_val=dict(dataset=dict(_DATA_2P5, **settings["dataloader_val"]["dataset"])),
        optimizer=_OPTIMIZER,
        scheduler=dict(warm_up_steps=[100], f_start=[0.1]),
        trainer=_TRAINER,
        checkpoint=dict(save_iter=500),
    )
    return LazyDict(experiment)


# The names this file registers, written out: the experiment index reads them without running the file.
EXPERIMENT_NAMES = [
    "transfer2p5_2b_edge_posttrain",
    "transfer2p5_2b_blur_posttrain",
    "transfer2p5_2b_depth_posttrain",
    "transfer2p5_2b_seg_posttrain",
    "transfer2p5_2b_joint_posttrain",
    "predict2p5_2b_video2world_posttrain",
    "transfer2p5_tiny",
]
for modality in MODALITIES:
    name = f"transfer2p5_2b_{modality}_posttrain"
    cs.store(group="experiment", package="_global_", name=name, node=transfer2p5_2b_experiment(name, [modality]))
cs.store(group="experiment", package="_global_", name="transfer2p5_2b_joint_posttrain",
         node=transfer2p5_2b_experiment("transfer2p5_2b_joint_posttrain", list(MODALITIES), hint_dropout_rate=0.3))

# The Predict2.5-2B base (nvidia/Cosmos-Predict2.5-2B base/post-trained/*_ema_bf16.pt as load_path), whole.
PREDICT2P5_2B_VIDEO2WORLD = LazyDict(
    dict(
        defaults=[{"override /model": "predict2p5"}, {"override /net": "predict2p5_2b"}, *_DEFAULTS_2B, "_self_"],
        job=dict(project="cosmos_transfer", group="predict2p5_2b", name="predict2p5_2b_video2world_posttrain"),
        dataloader_train=dict(dataset=dict(_DATA_2P5, hint_keys=[])),
        dataloader_val=dict(dataset=dict(_DATA_2P5, hint_keys=[])),
        optimizer=dict(_OPTIMIZER, lr=2 ** (-15)),
        scheduler=dict(warm_up_steps=[100], f_start=[0.1]),
        trainer=_TRAINER,
        checkpoint=dict(save_iter=500),
    )
)
cs.store(group="experiment", package="_global_", name="predict2p5_2b_video2world_posttrain",
         node=PREDICT2P5_2B_VIDEO2WORLD)

# CPU size: the demo data at 17 x 32 x 32 -> DCT latents 24 x 5 x 8 x 8, patch 1: 320 tokens per clip.
_TINY_DATA = dict(num_frames=17, resolution=[32, 32], text_embedding_folder="minilm_l6", text_embedding_length=40,
                  text_embedding_dim=384)
TRANSFER2P5_TINY = LazyDict(
    dict(
        defaults=[
            {"override /model": "transfer2p5"},
            {"override /net": "tiny_transfer_2p5"},
            {"override /hint_key": "control_input_edge"},
            {"override /tokenizer": "dct"},
            {"override /data_train": "demo"},
            {"override /data_val": "demo"},
            {"override /scheduler": "lambdalinear"},
            {"override /callbacks": "loss_line"},  # a loss line every 10 iterations (no progress bar in a log)
            "_self_",
        ],
        job=dict(project="cosmos_transfer", group="transfer2p5_tiny", name="transfer2p5_tiny"),
        model=dict(
            # The demo's MiniLM captions (40 x 384) through crossattn_proj, as Reason1's 100,352 are in the 2B.
            net=dict(in_channels=24, out_channels=24, patch_spatial=1, max_img_h=32, max_img_w=32, max_frames=8,
                     use_crossattn_projection=True, crossattn_proj_in_channels=384, crossattn_emb_channels=64,
                     vace_block_every_n=1, num_max_modalities=1),
        ),
        dataloader_train=dict(batch_size=2, dataset=_TINY_DATA),
        dataloader_val=dict(batch_size=1, dataset=_TINY_DATA),
        optimizer=dict(lr=1e-3, weight_decay=0.01),
        scheduler=dict(warm_up_steps=[10], f_start=[0.1]),
        trainer=dict(max_iter=100, logging_iter=10, validation_iter=100, validation_num_batches=1,
                     sample_num_steps=8, sample_guidance=0.0, seed=0),
        checkpoint=dict(save_iter=50, keep_last_k=2),
    )
)
cs.store(group="experiment", package="_global_", name="transfer2p5_tiny", node=TRANSFER2P5_TINY)
