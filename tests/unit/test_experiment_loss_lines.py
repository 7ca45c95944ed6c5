"""Every shipped training experiment prints plain loss lines (the loss_line callback) within its run: in a log file
no progress bar shows, and the tiny 2.5 experiment printed nothing but its start-up lines."""

import pytest

from configs.train import make_config
from cosmos_transfer.config.compose import override

SHIPPED = ["transfer2p5_tiny", "transfer2p5_2b_edge_posttrain", "transfer2p5_2b_joint_posttrain",
           "predict2p5_2b_video2world_posttrain", "demo_edge_tiny", "demo_base_tiny", "ctrl_7b_edge_posttrain",
           "ctrl_7b_joint_posttrain"]


@pytest.mark.parametrize("experiment", SHIPPED)
def test_a_shipped_experiment_prints_loss_lines(experiment):
    trainer = override(make_config(), ["--", f"experiment={experiment}"]).trainer
    line = dict(trainer.callbacks).get("loss_line")
    assert line is not None, f"{experiment} prints no loss line"
    assert line["_target_"].endswith("LossLine") and int(line["every"]) <= int(trainer.max_iter)
    assert int(line["every"]) == int(trainer.logging_iter)
