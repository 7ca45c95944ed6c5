"""The start-up line's tokens per step (trainer/logging.py): under context parallelism the ranks of a group share one
sample, so its tokens count once (they were counted once per rank: 2x on 2 ranks of one group)."""

from types import SimpleNamespace as NS

from cosmos_transfer.trainer.logging import _tokens_per_step


def _trainer(world_size: int, cp_size: int | None) -> NS:
    dataset = NS(num_frames=17, resolution=[32, 32])
    cp = NS(size=cp_size) if cp_size else None
    return NS(data=NS(loader=NS(dataset=dataset, batch_size=1)), grad_accum_iter=1, world_size=world_size,
              dp_size=world_size // (cp_size or 1), cp=cp, _tokens=lambda batch: 320)


def test_a_context_parallel_group_counts_its_shared_sample_once():
    assert _tokens_per_step(_trainer(2, None)).startswith("640 (1 clip(s) of 17 frames at 32x32 per rank, x 1 "
                                                          "accumulation x 2 rank(s))")
    line = _tokens_per_step(_trainer(2, 2))
    assert line == "320 (1 clip(s) of 17 frames at 32x32 per rank, x 1 accumulation x 1 data-parallel rank(s) of 2 " \
                   "sharing each sample)"
    assert _tokens_per_step(_trainer(4, 2)).startswith("640 ")


def test_with_buckets_each_buckets_shape_is_counted_not_a_resolution_no_bucket_has():
    """A bucketed dataset's num_frames/resolution are its stand-ins (the shortest length, a square of the longest
    side): the line reported tokens of a 32x48 'clip' no bucket has; it names the buckets' own shapes."""
    from cosmos_transfer.data.buckets import parse_buckets

    trainer = _trainer(2, None)
    trainer.data.loader.dataset = NS(num_frames=8, resolution=(48, 48),
                                     buckets=parse_buckets(["32x48x8:2", "48x32x16:2"]))
    trainer.data.loader.batch_size = None  # a batch sampler: each bucket its own batch
    trainer._tokens = lambda batch: batch["video"].shape[0] * batch["video"].shape[2] * 10
    line = _tokens_per_step(trainer)
    assert line == "320..640 by bucket (32x48x8:2 320, 48x32x16:2 640; x 1 accumulation x 2 rank(s))"
    assert "48x48" not in line
