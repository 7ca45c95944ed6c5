"""Example experiments: a literal one, and a family generated in a loop (both read by the index without importing).

    python scripts/train.py --config=configs/train.py --dryrun -- experiment=example_tiny trainer.max_iter=7
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.lazy_config import LazyDict

cs = ConfigStore.instance()

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
        optimizer=dict(lr=1e-4),
        trainer=dict(max_iter=20, logging_iter=5),
        checkpoint=dict(save_iter=10),
    )
)
cs.store(group="experiment", package="_global_", name="example_tiny", node=EXAMPLE_TINY)


# The Cosmos way of generating a family: one experiment per hint key and stage. The index reads these names from the
# literals below (no import); the job name interpolates the experiment's own settings.
HINT_KEYS = ["edge", "vis", "depth", "seg", "keypoint"]
STAGES = {"pretrain": 1e-4, "posttrain": 2e-5}

for hint_key in HINT_KEYS:
    for stage, lr in STAGES.items():
        cs.store(
            group="experiment",
            package="_global_",
            name=f"example_tiny_ctrl_{hint_key}_{stage}",
            node=LazyDict(
                dict(
                    defaults=[
                        {"override /net": "tiny"},
                        {"override /net_ctrl": "tiny"},
                        {"override /hint_key": f"control_input_{hint_key}"},
                        "_self_",
                    ],
                    job=dict(group="examples", name=f"example_tiny_ctrl_{hint_key}_{stage}"),
                    optimizer=dict(lr=lr),
                    trainer=dict(max_iter=20),
                )
            ),
        )
