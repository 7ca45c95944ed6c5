"""Context parallelism checked before building (cosmos_transfer/preflight.py): a size that does not divide the ranks,
the networks' attention heads or the clips' latent frames is refused in the preflight message, naming the sizes and
the clip lengths (pixel frames) that would work, instead of at the first forward pass after the model is built."""

from types import SimpleNamespace as NS

from configs.train import make_config
from cosmos_transfer.config.compose import override
from cosmos_transfer.preflight import check_run, context_parallel_problems, meta_model


def _problems(world_size: int, *overrides: str) -> list[str]:
    config = override(make_config(), ["--", *overrides])
    model, _ = meta_model(config)
    return context_parallel_problems(config, model, world_size=world_size)


def test_a_size_that_does_not_divide_the_ranks_is_refused_before_building():
    config = override(make_config(), ["--", "experiment=transfer2p5_tiny", "trainer.context_parallel_size=2",
                                      "dataloader_train.dataset.num_frames=13", "dataloader_val.dataset.num_frames=13"])
    problems = [p for p in check_run(config, world_size=3, local_world_size=3, device_type="cpu")
                if "context_parallel_size" in p]
    assert len(problems) == 1 and "must divide the number of ranks (3)" in problems[0], problems


def test_clip_lengths_that_do_not_split_name_the_lengths_that_would():
    # The DCT tokenizer: 17 frames -> 5 latent frames; over 2 ranks 2, 4 | 6, 8 would split: 5, 13 | 21, 29 frames.
    problems = _problems(2, "experiment=transfer2p5_tiny", "trainer.context_parallel_size=2",
                         "dataloader_train.dataset.num_frames=17", "dataloader_val.dataset.num_frames=9")
    train, val = problems
    assert "dataloader_train.dataset.num_frames: clips of 17 frames are 5 latent frames" in train
    assert "lengths that split: 5, 13, 21, 29 frames" in train
    assert "dataloader_val.dataset.num_frames: clips of 9 frames are 3 latent frames" in val


def test_heads_that_do_not_split_name_the_sizes_that_would():
    # The Transfer1 demo's tiny net has 3 heads (base and branch): 2 ranks cannot share them, 3 could.
    problems = _problems(6, "experiment=demo_edge_tiny", "trainer.context_parallel_size=2")
    heads = [p for p in problems if "attention heads" in p]
    assert len(heads) == 2 and all("has 3 attention heads" in p and "over 6 rank(s): [3]" in p for p in heads)


def test_the_shipped_tiny_2p5_experiment_says_which_lengths_split():
    """Its 17 frames (5 latent frames, as the Transfer1 demo's) cannot split: the refusal says 13 or 21 can."""
    problems = _problems(2, "experiment=transfer2p5_tiny", "trainer.context_parallel_size=2")
    assert len(problems) == 2 and all("5, 13, 21, 29 frames" in p for p in problems)
    assert _problems(2, "experiment=transfer2p5_tiny", "trainer.context_parallel_size=2",
                     "dataloader_train.dataset.num_frames=13", "dataloader_val.dataset.num_frames=21") == []


def test_buckets_are_checked_each():
    model, _ = meta_model(override(make_config(), ["--", "experiment=transfer2p5_tiny"]))
    config = NS(trainer=NS(context_parallel_size=2, fsdp_shard_size=0), dataloader_val=None,
                dataloader_train={"dataset": {"buckets": ["32x32x13:1", "32x32x17:1"]}})
    (problem,) = context_parallel_problems(config, model, world_size=2)
    assert problem.startswith("dataloader_train.dataset.buckets: clips of 17 frames"), problem
