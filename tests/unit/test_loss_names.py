"""Each objective names its loss in the metrics (metrics.jsonl, TensorBoard): EDM's `edm_loss` (Cosmos-1.0 logs it
so), rectified flow's `flow_loss`; the 2.5 models logged their velocity loss as `edm_loss`."""

from cosmos_transfer.diffusion.objectives import EDMObjective, RectifiedFlowObjective
from tests.helpers import control_batch
from tests.unit.test_model_v2_5 import _batch, _model


def test_the_objectives_name_their_losses():
    assert EDMObjective().loss_name == "edm_loss"
    assert RectifiedFlowObjective().loss_name == "flow_loss"


def test_a_rectified_flow_model_logs_flow_loss_not_edm_loss():
    _, metrics = _model().train().training_step(_batch())
    assert "flow_loss" in metrics and "edm_loss" not in metrics
    assert float(metrics["flow_loss"]) == float(metrics["mse"])


def test_an_edm_model_keeps_edm_loss():
    from configs.train import make_config
    from cosmos_transfer.config.compose import override
    from cosmos_transfer.config.lazy import instantiate

    model = instantiate(override(make_config(), ["--", "experiment=ctrl_tiny"]).model)
    _, metrics = model.train().training_step(control_batch())
    assert "edm_loss" in metrics and "flow_loss" not in metrics
