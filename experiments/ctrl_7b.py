"""Control post-training experiments: Cosmos-Transfer1-7B control branches, one per hint key, and a tiny one for tests.

    ctrl_7b_<key>_posttrain    key in edge, vis, depth, seg, keypoint: a new 3-block branch on the frozen 7B base
                               (video2world, 121 frames at 1280x704), bf16 base, activation checkpointing
    ctrl_7b_joint_posttrain    edge + vis + depth branches trained together, each hint dropped with probability 0.3
    ctrl_tiny                  the same model at CPU size (tiny net, pixel tokenizer, demo data): tests and demo

Starting weights (see docs/TRAINING.md): convert the official base once, giving the branch copies of its weights,
    python scripts/convert_checkpoint.py to-ours base_model.pt checkpoints/ctrl_7b_edge_init.safetensors \
        --new-control edge --num-control-blocks 3
then run with checkpoint.load_path=<that file> (the branch's own new layers are in allowed_missing_keys below).
To continue from NVIDIA's trained branch instead, convert with `--control edge=edge_control.pt`.

Data: the `custom` data option (docs/DATASETS.md): `dataloader_train.dataset.root=datasets/my_clips/train`
`dataloader_val.dataset.root=datasets/my_clips/val`.
"""

from hydra.core.config_store import ConfigStore

from configs.hint_key import hint_key_node
from cosmos_transfer.config.lazy import LazyDict
from cosmos_transfer.hints import HINT_KEYS
from cosmos_transfer.networks.dit_ctrl import NEW_BRANCH_KEY_PATTERNS

cs = ConfigStore.instance()

CONTROL_MODEL = "cosmos_transfer.diffusion.model_ctrl.ControlDiffusionModel"
# The branch's own layers, absent from a base checkpoint (net_ctrl.K.* copied from the base is present).
NEW_BRANCH_KEYS = list(NEW_BRANCH_KEY_PATTERNS)


def ctrl_7b_experiment(name: str, hint_keys: list, hint_dropout_rate: float = 0.0) -> LazyDict:
    """The 7B control post-training of `hint_keys` (one branch each) on the frozen video2world base."""
    defaults = [
        {"override /net": "cosmos_7b"},
        {"override /net_ctrl": "cosmos_7b"},
        {"override /tokenizer": "cosmos_cv8x8x8"},
        {"override /data_train": "custom"},  # 121 frames at 1280 x 704, T5-XXL text; set dataloader_train.dataset.root
        {"override /data_val": "custom"},
        {"override /optimizer": "fusedadamw"},
        {"override /scheduler": "lambdalinear"},
        {"override /callbacks": "loss_line"},  # a plain loss line every logging_iter (50) iterations, for batch logs
    ]
    if len(hint_keys) == 1:  # the hint_key group sets the model's and the datasets' keys
        defaults.append({"override /hint_key": f"control_input_{hint_keys[0]}"})
        keys = {}
    else:  # no group option for a set of keys: set the three lists here
        keys = hint_key_node(*hint_keys)
    experiment = dict(
        defaults=[*defaults, "_self_"],
        job=dict(project="cosmos_transfer", group="ctrl_7b", name=name),
        model=dict(
            _target_=CONTROL_MODEL,
            video2world=True,
            min_condition_frames=0,
            max_condition_frames=2,
            hint_dropout_rate=hint_dropout_rate,
            finetune_base=False,
            base_dtype="bfloat16",
            net=dict(in_channels=17),  # + condition-mask channel; the branch follows model.net
            **keys.get("model", {}),
        ),
        optimizer=dict(lr=2 ** (-14.3), weight_decay=0.1, betas=[0.9, 0.99], eps=1e-10),  # Cosmos: ~5e-5
        trainer=dict(max_iter=10_000, logging_iter=50, activation_checkpointing="full", clip_grad_norm=1.0,
                     callbacks=dict(loss_line=dict(every=50))),
        checkpoint=dict(save_iter=1000, allowed_missing_keys=NEW_BRANCH_KEYS),
    )
    experiment.update({k: v for k, v in keys.items() if k != "model"})
    return LazyDict(experiment)


# The names this file registers, written out: the experiment index reads them without running the file (the loop
# below builds them; a test checks the two agree).
EXPERIMENT_NAMES = [
    "ctrl_7b_edge_posttrain",
    "ctrl_7b_vis_posttrain",
    "ctrl_7b_depth_posttrain",
    "ctrl_7b_seg_posttrain",
    "ctrl_7b_keypoint_posttrain",
    "ctrl_7b_joint_posttrain",
    "ctrl_tiny",
]
for hint_key in HINT_KEYS:
    cs.store(
        group="experiment",
        package="_global_",
        name=f"ctrl_7b_{hint_key}_posttrain",
        node=ctrl_7b_experiment(f"ctrl_7b_{hint_key}_posttrain", [hint_key]),
    )

# Several branches trained in one run (Cosmos trains each alone): each sample drops each hint with probability 0.3.
cs.store(
    group="experiment",
    package="_global_",
    name="ctrl_7b_joint_posttrain",
    node=ctrl_7b_experiment("ctrl_7b_joint_posttrain", ["edge", "vis", "depth"], hint_dropout_rate=0.3),
)

# CPU-sized control training (tests, demo): tiny base + 1-block branch, pixel tokenizer, demo data, edge control.
CTRL_TINY = LazyDict(
    dict(
        defaults=[
            {"override /net": "tiny"},
            {"override /net_ctrl": "tiny"},
            {"override /hint_key": "control_input_edge"},  # `hint_key=control_input_depth` switches model and data
            {"override /tokenizer": "pixel"},
            {"override /data_train": "demo"},
            {"override /data_val": "demo"},
            {"override /scheduler": "constant"},
            "_self_",
        ],
        job=dict(project="cosmos_transfer", group="ctrl_tiny", name="ctrl_tiny"),
        # The pixel tokenizer folds 4x4 pixel patches into 48 channels; the demo captions are MiniLM (40 x 384).
        model=dict(_target_=CONTROL_MODEL,
                   net=dict(in_channels=48, out_channels=48, max_frames=24, crossattn_emb_channels=384)),
        optimizer=dict(lr=1e-4),
        trainer=dict(max_iter=20, logging_iter=5),
        checkpoint=dict(save_iter=10),
    )
)
cs.store(group="experiment", package="_global_", name="ctrl_tiny", node=CTRL_TINY)
