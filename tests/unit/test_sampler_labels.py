"""Samplers are called by their real names in reports (issue 25 item 5): benchmarks/demo_edge_f1.py said "res2ab"
for every model, also for a Cosmos-2.5 (rectified-flow) model sampled with UniPC."""

import argparse
import importlib.util
import os
from types import SimpleNamespace

from cosmos_transfer.diffusion.objectives import EDMObjective, RectifiedFlowObjective
from cosmos_transfer.inference.pipeline import SamplingOptions, sampler_name
from tests.helpers import REPO_DIR


def _benchmark():
    path = os.path.join(REPO_DIR, "benchmarks", "demo_edge_f1.py")
    spec = importlib.util.spec_from_file_location("demo_edge_f1", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sampler_is_the_one_asked_for_or_the_objectives_default():
    flow, edm = SimpleNamespace(objective=RectifiedFlowObjective()), SimpleNamespace(objective=EDMObjective())
    assert sampler_name(flow, SamplingOptions()) == "unipc"
    assert sampler_name(edm, SamplingOptions()) == "res2ab"
    assert sampler_name(flow, SamplingOptions(sampler="euler")) == "euler"


def test_demo_edge_f1_labels_each_model_by_its_sampler():
    benchmark = _benchmark()
    args = benchmark.build_parser().parse_args(["--num_steps", "12"])
    flow = SimpleNamespace(objective=RectifiedFlowObjective())
    line = benchmark.heading(args, sampler_name(flow, SamplingOptions()), 2, 17, (64, 64), "job/iter_10", 3.0)
    assert "12 unipc steps" in line and "res2ab" not in line and "sigma_min" not in line, line
