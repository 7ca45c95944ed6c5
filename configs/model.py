"""Option group `model` (package `model`): the training model. Its net, tokenizer, conditioner and ema come from
their own groups (packages model.net, model.tokenizer, ...), merged after this one in the defaults list.

    diffusion     text2world EDM model (Cosmos-Transfer1 settings: sigma_data 0.5, lognormal(0, 1) sigmas scaled
                  by sqrt(latent frames), learned-uncertainty loss)
    video2world   the same, conditioned on 0..2 clean first latent frames in training (the Cosmos-Transfer1-7B base
                  is a video2world net); the net needs one more input channel: model.net.in_channels=17 (7B)
    ctrl          ControlDiffusionModel: a frozen text2world base plus one ControlNet branch per hint key (the
                  branches come from group net_ctrl, the hint keys from group hint_key)
    ctrl_video2world  the same on a video2world base: Cosmos-Transfer1-7B's control post-training setting
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


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="model", package="model", name="diffusion", node=DIFFUSION)
    cs.store(group="model", package="model", name="video2world", node=VIDEO2WORLD)
    cs.store(group="model", package="model", name="ctrl", node=CTRL)
    cs.store(group="model", package="model", name="ctrl_video2world", node=CTRL_VIDEO2WORLD)
