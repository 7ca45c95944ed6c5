"""The CPU demo: `make demo` trains this experiment for a few minutes with 2 processes.

    torchrun --standalone --nproc_per_node=2 scripts/train.py --config=configs/train.py -- experiment=demo_edge_tiny

Tiny GeneralDIT, the light pixel tokenizer, the synthetic demo dataset (datasets/demo, made by
scripts/make_demo_dataset.py: coloured shapes moving over textures, MiniLM caption embeddings of 40 x 384), the edge
control in every batch. Outputs in outputs/cosmos_transfer/demo/demo_edge_tiny: checkpoints/, metrics.jsonl,
tensorboard/, samples/ (generated mp4 and a control | generated | ground-truth GIF every validation).
Rerunning the command resumes from the latest checkpoint.
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.lazy_config import LazyDict

# The demo dataset's text embeddings (cosmos_transfer/data/demo.py): all-MiniLM-L6-v2, 40 tokens x 384.
_TEXT = dict(text_embedding_folder="minilm_l6", text_embedding_length=40, text_embedding_dim=384)
_DATA = dict(num_frames=17, resolution=[64, 64], hint_keys=["edge"], **_TEXT)

DEMO_EDGE_TINY = LazyDict(
    dict(
        defaults=[
            {"override /model": "diffusion"},
            {"override /net": "tiny"},
            {"override /tokenizer": "pixel"},
            {"override /ema": "power"},
            {"override /data_train": "demo"},
            {"override /data_val": "demo"},
            {"override /scheduler": "lambdalinear"},
            {"override /callbacks": "loss_line"},
            "_self_",
        ],
        job=dict(project="cosmos_transfer", group="demo", name="demo_edge_tiny"),
        model=dict(net=dict(crossattn_emb_channels=384)),
        dataloader_train=dict(batch_size=2, dataset=_DATA),
        dataloader_val=dict(batch_size=1, dataset=_DATA),
        optimizer=dict(lr=1e-3, weight_decay=0.01),
        scheduler=dict(warm_up_steps=[20], f_start=[0.1]),
        trainer=dict(
            max_iter=1000,
            validation_iter=250,
            validation_num_batches=2,
            sample_num_steps=12,
            sample_guidance=0.0,
            seed=0,
        ),
        checkpoint=dict(save_iter=250, keep_last_k=2),
    )
)
ConfigStore.instance().store(group="experiment", package="_global_", name="demo_edge_tiny", node=DEMO_EDGE_TINY)
