"""Option group `model` (package `model`): the training model. Its net, tokenizer and conditioner come from
their own groups (packages model.net, model.tokenizer, ...), merged after this one in the defaults list.

    diffusion     text2world EDM model (Cosmos-Transfer1 settings: sigma_data 0.5, lognormal(0, 1) sigmas scaled
                  by sqrt(latent frames), learned-uncertainty loss)
    video2world   the same, conditioned on 0..2 clean first latent frames in training (the Cosmos-Transfer1-7B base
                  is a video2world net); the net needs one more input channel: model.net.in_channels=17 (7B)
    ctrl          ControlDiffusionModel: a frozen text2world base plus one ControlNet branch per hint key (the
                  branches come from group net_ctrl, the hint keys from group hint_key)
    ctrl_video2world  the same on a video2world base: Cosmos-Transfer1-7B's control post-training setting

The Cosmos-2.5 family (Cosmos25Model, diffusion/model_v2_5.py; nets from group net: *_2p5, predict2p5_*,
transfer2p5_*): rectified flow with NVIDIA's 2.5 settings (shift 5, logit-normal timesteps; the nets scale the
timestep by 0.001), video2world, classifier-free guidance on the velocity, UniPC sampling.
    predict2p5    a Cosmos25DiT trained as a whole; 0/1/2 conditioning latent frames with probabilities
                  0.5/0.25/0.25 (cosmos-predict2.5 predict2/configs/video2world/experiment/reason_embeddings/
                  model_2B_reason_1p1_rectified_flow.py)
    transfer2p5   a Cosmos25ControlDiT: frozen base, trainable control branches (one per hint key, group hint_key);
                  0/1/2 frames with probabilities 0.4/0.4/0.2 (cosmos-transfer2.5 transfer2/configs/
                  vid2vid_transfer/experiment/exp_large_scale.py)
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyCall as L

_EDM = dict(
    sigma_data=0.5,
    p_mean=0.0,
    p_std=1.0,
    adjust_video_noise=True,
    loss_add_logvar=True,
    loss_scale=1.0,
    sigma_max=70.0,  # sampling schedule (Karras, rho 7), as Cosmos samples
    sigma_min=0.002,
    rho=7.0,
)

DIFFUSION = L("cosmos_transfer.diffusion.model.DiffusionModel")(
    net=None, tokenizer=None, conditioner=None, video2world=False, **_EDM
)

VIDEO2WORLD = L("cosmos_transfer.diffusion.model.DiffusionModel")(
    net=None, tokenizer=None, conditioner=None, video2world=True, min_condition_frames=0, max_condition_frames=2,
    **_EDM,
)

# The control model adds its branches (group net_ctrl) and hint keys (group hint_key) to the base model's settings.
_CTRL = dict(net_ctrl=None, hint_keys=["edge"], hint_dropout_rate=0.0, finetune_base=False, branch_dropout_rate=0.5)

CTRL = L("cosmos_transfer.diffusion.model_ctrl.ControlDiffusionModel")(
    net=None, tokenizer=None, conditioner=None, video2world=False, **_CTRL, **_EDM
)

CTRL_VIDEO2WORLD = L("cosmos_transfer.diffusion.model_ctrl.ControlDiffusionModel")(
    net=None, tokenizer=None, conditioner=None, video2world=True, min_condition_frames=0, max_condition_frames=2,
    **_CTRL, **_EDM,
)

# Cosmos-2.5: the objective as NVIDIA trains the 2.5 models (diffusion/objectives.py).
RECTIFIED_FLOW = L("cosmos_transfer.diffusion.objectives.RectifiedFlowObjective")(
    shift=5.0, time_distribution="logitnormal", default_method="unipc"
)

PREDICT2P5 = L("cosmos_transfer.diffusion.model_v2_5.Cosmos25Model")(
    net=None, tokenizer=None, conditioner=None, objective=RECTIFIED_FLOW, video2world=True,
    condition_frame_probs={0: 0.5, 1: 0.25, 2: 0.25}, hint_keys=[],
)

TRANSFER2P5 = L("cosmos_transfer.diffusion.model_v2_5.Cosmos25Model")(
    net=None, tokenizer=None, conditioner=None, objective=RECTIFIED_FLOW, video2world=True,
    condition_frame_probs={0: 0.4, 1: 0.4, 2: 0.2}, hint_keys=["edge"], hint_dropout_rate=0.0, finetune_base=False,
    base_dtype=None,
)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="model", package="model", name="diffusion", node=DIFFUSION)
    cs.store(group="model", package="model", name="video2world", node=VIDEO2WORLD)
    cs.store(group="model", package="model", name="ctrl", node=CTRL)
    cs.store(group="model", package="model", name="ctrl_video2world", node=CTRL_VIDEO2WORLD)
    cs.store(group="model", package="model", name="predict2p5", node=PREDICT2P5)
    cs.store(group="model", package="model", name="transfer2p5", node=TRANSFER2P5)
