"""The demo experiment's network can denoise every value of its tokens.

GeneralDIT's final layer writes a token's patch_spatial^2 x patch_temporal x channels values as a linear map of its
model_channels features, and its patch embedding reads them through the same width. Values outside that
model_channels-dimensional subspace are never denoised, and sampling leaves them as noise of std sigma_data: the
first demo (768 values per token through 64 channels) sampled pure noise although its loss fell.
"""

from __future__ import annotations

from configs.train import make_config
from cosmos_transfer.inference import loading


def _token_values(net) -> int:
    return net.patch_spatial**2 * net.patch_temporal * net.out_channels


def test_demo_net_is_wide_enough_for_its_tokens():
    config = loading.compose_config("demo_edge_tiny", make_config=make_config)
    net = config.model.net
    assert _token_values(net) <= net.model_channels, (
        f"demo_edge_tiny: {_token_values(net)} values per token through {net.model_channels} channels"
    )
    assert net.max_img_h * 4 >= config.dataloader_train.dataset.resolution[0]


def test_demo_built_net_projects_tokens_through_enough_features():
    model = loading.build_model(loading.compose_config("demo_edge_tiny", make_config=make_config))
    weight = model.net.final_layer.linear.weight  # [token values, model_channels]: output rank <= model_channels
    assert weight.shape[0] == _token_values(model.net)
    assert weight.shape[0] <= weight.shape[1]
