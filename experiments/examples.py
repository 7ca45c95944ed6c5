"""Example experiments: a literal one, and a family generated in a loop (its names declared in EXPERIMENT_NAMES).

    python scripts/train.py --config=configs/train.py --dryrun -- experiment=example_tiny trainer.max_iter=7

See docs/CONFIG.md for writing your own, in this folder or in a folder of your own named in COSMOS_EXPERIMENT_PATH.
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyDict

cs = ConfigStore.instance()

# The tiny net sized for the pixel tokenizer's 48 channels (4x4 patches of RGB), the demo data's 17-frame clips and its
# MiniLM captions (40 x 384): without it the model refused the tokenizer's channels at build time.
_TINY_MODEL = dict(net=dict(in_channels=48, out_channels=48, max_frames=24, crossattn_emb_channels=384))

# A small, CPU-sized run: tiny network, pixel tokenizer, demo data, constant learning rate.
EXAMPLE_TINY = LazyDict(
    dict(
        defaults=[
            {"override /net": "tiny"},
            {"override /tokenizer": "pixel"},
            {"override /data_train": "demo"},
            {"override /data_val": "demo"},
            {"override /scheduler": "constant"},
            "_self_",
        ],
        job=dict(group="examples", name="example_tiny"),
        model=_TINY_MODEL,
        optimizer=dict(lr=1e-4),
        trainer=dict(max_iter=20, logging_iter=5),
        checkpoint=dict(save_iter=10),
    )
)
cs.store(group="experiment", package="_global_", name="example_tiny", node=EXAMPLE_TINY)


# A family generated the Cosmos way, one experiment per stage and scheduler. Names built in a loop are declared in
# EXPERIMENT_NAMES, a literal list the index reads without importing this file (a test checks it against the loop).
STAGES = {"pretrain": dict(lr=1e-4, max_iter=40), "posttrain": dict(lr=2e-5, max_iter=20)}
SCHEDULERS = ["constant", "lambdalinear"]
EXPERIMENT_NAMES = [
    "example_tiny",
    "example_tiny_pretrain_constant",
    "example_tiny_pretrain_lambdalinear",
    "example_tiny_posttrain_constant",
    "example_tiny_posttrain_lambdalinear",
]

for stage, settings in STAGES.items():
    for scheduler in SCHEDULERS:
        cs.store(
            group="experiment",
            package="_global_",
            name=f"example_tiny_{stage}_{scheduler}",
            node=LazyDict(
                dict(
                    defaults=[{"override /net": "tiny"}, {"override /scheduler": scheduler}, "_self_"],
                    job=dict(group="examples", name=f"example_tiny_{stage}_{scheduler}"),
                    model=_TINY_MODEL,
                    optimizer=dict(lr=settings["lr"]),
                    trainer=dict(max_iter=settings["max_iter"]),
                )
            ),
        )
