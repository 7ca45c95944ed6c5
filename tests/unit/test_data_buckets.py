"""Buckets (data/buckets.py): which bucket a clip goes to, one shape per batch, distinct clips across ranks, the
same bucket sequence on every rank, and a resume that gives bitwise the batches of an uninterrupted run."""

import pytest
import torch

from cosmos_transfer.data.buckets import (
    Bucket,
    BucketBatchSampler,
    BucketedVideoDataset,
    build_bucket_dataloader,
    choose_bucket,
    parse_buckets,
)
from tests.tiny_datasets import make_tiny_dataset

TEXT = dict(text_embedding_length=16, text_embedding_dim=8)


def test_parse_buckets_and_its_errors():
    assert parse_buckets(["704x1280x121:1", " 480 x 848 x 57 : 4 "]) == [Bucket(704, 1280, 121, 1),
                                                                          Bucket(480, 848, 57, 4)]
    assert parse_buckets([[32, 48, 8, 2]]) == [Bucket(32, 48, 8, 2)]
    for bad, message in (("704x1280x121:1", "non-empty list"), ([], "non-empty list"), (["704x1280:1"], "HxWxT:B"),
                         (["704x1280x121:0"], "positive integers"), (["8x8x4:1", "8x8x4:2"], "more than once")):
        with pytest.raises(ValueError, match=message):
            parse_buckets(bad)


def test_choose_bucket_nearest_aspect_then_largest_without_upscaling_then_longest():
    buckets = parse_buckets(["704x1280x121:1", "352x640x121:2", "352x640x57:4", "1280x704x121:1", "960x960x121:1"])
    # 16:9 at 1080p, 200 frames: nearest aspect 16:9; 704x1280 does not upscale it; the longer of the lengths
    assert choose_bucket(1080, 1920, 200, 1, buckets) == 0
    # 16:9 at 480p: 704x1280 would upscale it, 352x640 does not
    assert choose_bucket(480, 854, 200, 1, buckets) == 1
    # ... and with only 100 frames, 121 does not fit: the 57-frame bucket
    assert choose_bucket(480, 854, 100, 1, buckets) == 2
    # every 16:9 bucket would upscale a 180x320 clip: the smallest of them
    assert choose_bucket(180, 320, 200, 1, buckets) == 1
    # portrait and square clips go to their own aspect ratios; 4:3 is nearer 1:1 than 16:9 in log aspect
    assert choose_bucket(1920, 1080, 200, 1, buckets) == 3
    assert choose_bucket(1000, 1000, 200, 1, buckets) == 4
    assert choose_bucket(960, 1280, 200, 1, buckets) == 4
    # frames are counted at the dataset's stride: 100 frames every 2nd is a window of at most 50
    assert choose_bucket(480, 854, 100, 2, buckets) is None
    # a clip whose frame cannot be reflection-padded into any bucket (4:1 into 16:9 at most)
    assert choose_bucket(100, 400, 200, 1, parse_buckets(["704x704x121:1"])) is None


def _sampler_batches(bucket_of, buckets, rank, world_size, epoch=0, seed=3):
    sampler = BucketBatchSampler(bucket_of, buckets, rank=rank, world_size=world_size, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_one_bucket_per_batch_distinct_across_ranks_same_bucket_order():
    buckets = parse_buckets(["8x8x4:2", "8x16x4:3", "16x8x4:1"])
    bucket_of = [i % 3 for i in range(40)]
    for epoch in (0, 1):
        per_rank = [_sampler_batches(bucket_of, buckets, rank, 2, epoch) for rank in (0, 1)]
        assert len(per_rank[0]) == len(per_rank[1]) > 0
        seen = []
        for batches in per_rank:
            for batch in batches:
                (bucket,) = {key[2] for key in batch}
                assert {key[0] for key in batch} == {epoch}
                assert len(batch) == buckets[bucket].batch_size
                assert all(bucket_of[key[1]] == bucket for key in batch)
                seen += [key[1] for key in batch]
        assert len(seen) == len(set(seen))  # no clip twice in an epoch, on any rank
        # every step, both ranks are in the same bucket (one shape across ranks)
        assert [b[0][2] for b in per_rank[0]] == [b[0][2] for b in per_rank[1]]
    # epochs are shuffled differently, the same way for the same seed
    assert _sampler_batches(bucket_of, buckets, 0, 2, 0) != _sampler_batches(bucket_of, buckets, 0, 2, 1)
    assert _sampler_batches(bucket_of, buckets, 0, 2, 1) == _sampler_batches(bucket_of, buckets, 0, 2, 1)


def test_sampler_refuses_buckets_too_small_for_a_batch_per_rank():
    with pytest.raises(ValueError, match="no bucket has enough clips"):
        BucketBatchSampler([0, 0, 0], parse_buckets(["8x8x4:2"]), rank=0, world_size=2)


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory):
    """Landscape, portrait and short clips, and one too narrow for any bucket."""
    root = tmp_path_factory.mktemp("buckets")
    make_tiny_dataset(root, stems=[f"land{i}" for i in range(6)], num_frames=12, size=(32, 48))
    make_tiny_dataset(root, stems=[f"port{i}" for i in range(4)], num_frames=12, size=(48, 32))
    make_tiny_dataset(root, stems=[f"short{i}" for i in range(4)], num_frames=5, size=(32, 48))
    return str(root)


BUCKETS = ["32x48x8:2", "32x48x4:2", "48x32x8:2"]


def test_dataset_loads_each_clip_at_its_bucket_shape(mixed_root):
    dataset = BucketedVideoDataset(mixed_root, BUCKETS, **TEXT, max_bad_fraction=0.5)
    assert dataset.bucket_counts() == {"32x48x8:2": 6, "32x48x4:2": 4, "48x32x8:2": 4}
    stems = [clip.stem for clip in dataset.clips]
    for index, stem in enumerate(stems):
        bucket = dataset.buckets[dataset.bucket_of[index]]
        sample = dataset[(0, index, dataset.bucket_of[index])]
        assert sample["video"].shape == (3, bucket.num_frames, bucket.height, bucket.width), stem
        assert sample["padding_mask"].shape == (1, bucket.height, bucket.width)
        assert int(sample["num_frames"]) == bucket.num_frames
        assert float(sample["padding_mask"].sum()) == 0  # nearest aspect ratio: no padding for these clips
    with pytest.raises(TypeError, match="epoch, index, bucket"):
        dataset[(0, 1)]


def test_dataset_errors(mixed_root):
    from cosmos_transfer.config.errors import DataError

    # One shape's settings are the buckets' to decide: not used, and said so
    dataset = BucketedVideoDataset(mixed_root, BUCKETS, num_frames=8, resolution=[64, 64], **TEXT,
                                   max_bad_fraction=0.5)
    assert dataset.replaced == {"num_frames": 8, "resolution": [64, 64]}
    assert dataset[(0, 0, dataset.bucket_of[0])]["video"].shape[1:] == (8, 32, 48)
    with pytest.raises(DataError, match="use_latents"):
        BucketedVideoDataset(mixed_root, BUCKETS, use_latents=True, **TEXT)
    with pytest.raises(DataError, match="no clip of"):  # 6:1: no clip can be reflection-padded to it
        BucketedVideoDataset(mixed_root, ["8x48x4:1"], **TEXT, max_bad_fraction=1.0)


def _all_batches(loader, count):
    out, iterator = [], iter(loader)
    while len(out) < count:
        try:
            out.append(next(iterator))
        except StopIteration:
            iterator = iter(loader)
    return out


def test_resume_gives_bitwise_the_same_batches(mixed_root):
    dataset = BucketedVideoDataset(mixed_root, BUCKETS, **TEXT)
    total = 10  # more than one epoch (7 batches each)
    reference = _all_batches(build_bucket_dataloader(dataset, seed=2, rank=0, world_size=1), total)
    assert len({tuple(b["video"].shape) for b in reference}) == 3

    first = build_bucket_dataloader(dataset, seed=2, rank=0, world_size=1)
    iterator = iter(first)
    for _ in range(3):
        next(iterator)
    state = first.state_dict()
    resumed = build_bucket_dataloader(dataset, seed=2, rank=0, world_size=1)
    resumed.load_state_dict(state)
    rest = _all_batches(resumed, total - 3)
    for expected, got in zip(reference[3:], rest):
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, got[key]), key
            else:
                assert value == got[key], key


def test_resume_refuses_other_buckets_or_seed(mixed_root):
    dataset = BucketedVideoDataset(mixed_root, BUCKETS, **TEXT)
    state = build_bucket_dataloader(dataset, seed=2, rank=0, world_size=1).state_dict()
    other = BucketedVideoDataset(mixed_root, ["32x48x8:1", "32x48x4:2", "48x32x8:2"], **TEXT)
    with pytest.raises(ValueError, match="other buckets"):
        build_bucket_dataloader(other, seed=2, rank=0, world_size=1).load_state_dict(state)
    with pytest.raises(ValueError, match="seed="):
        build_bucket_dataloader(dataset, seed=3, rank=0, world_size=1).load_state_dict(state)


def test_the_custom_buckets_option_composes_from_the_command_line_and_loads(mixed_root):
    from configs.train import make_config
    from cosmos_transfer.config.compose import override
    from cosmos_transfer.config.lazy import instantiate

    default = override(make_config(), ["data_train=custom_buckets"])
    assert list(default.dataloader_train.dataset.buckets)[0] == "704x1280x121:1"  # NVIDIA's 720p 16:9 at 121 frames
    config = override(make_config(), [
        "data_train=custom_buckets", f"dataloader_train.dataset.root={mixed_root}",
        "dataloader_train.dataset.buckets=[32x48x8:2,48x32x8:1]", "dataloader_train.num_workers=0",
        "dataloader_train.dataset.text_embedding_folder=t5_xxl", "dataloader_train.dataset.text_embedding_length=16",
        "dataloader_train.dataset.text_embedding_dim=8", "dataloader_train.dataset.max_bad_fraction=0.5",
    ])  # fmt: skip
    loader = instantiate(config.dataloader_train)
    shapes = {tuple(batch["video"].shape) for batch in loader}
    assert shapes == {(2, 3, 8, 32, 48), (1, 3, 8, 48, 32)}
    assert loader.state_dict()["consumed"] == 7  # 3 landscape batches of 2 (6 clips), 4 portrait batches of 1


# ----------------------------------------------------------------------- issue 25: bounds, composition, resume
def test_malformed_zero_negative_or_oversized_buckets_are_a_data_error_naming_the_entry():
    from cosmos_transfer.config.errors import DataError

    cases = [(["abc"], "'abc': expected 'HxWxT:B'"), ([None], "None: expected"),
             (["0x48x8:1"], "'0x48x8:1': height, width, frames and batch size must be positive"),
             ([[32, 48, -8, 1]], r"\[32, 48, -8, 1\]: height, width, frames and batch size must be positive"),
             (["-32x48x8:1"], "'-32x48x8:1': expected"), ([[32.0, 48, 8, 1]], "positive integers"),
             (["70400x1280x121:1"], "'70400x1280x121:1': height 70,400 is over the largest taken"),
             (["704x1280x121000:1"], "frames 121,000 is over"), (["704x1280x121:100000"], "batch size 100,000 is over"),
             (["8x8x4:1"] * 300, "300 entries")]
    for spec, message in cases:
        with pytest.raises(DataError, match=message):
            parse_buckets(spec)


def test_a_bucket_whose_batches_exceed_the_host_memory_is_refused_before_building(mixed_root):
    """A bucket size nothing checked made the loader ask for hundreds of GiB: preflight names it first."""
    from configs.train import make_config
    from cosmos_transfer.config.compose import override
    from cosmos_transfer.data.buckets import batch_bytes, bucket_memory_problems
    from cosmos_transfer.preflight import check_run

    # 2 (samples + collated batch) x B x T x H x W x 3 bytes x (video + 1 control)
    assert batch_bytes(Bucket(704, 1280, 121, 2), 1) == 2 * 2 * 121 * 704 * 1280 * 3 * 2
    fits = bucket_memory_problems(["704x1280x121:1"], 1, num_workers=4, prefetch_factor=None, local_world_size=1,
                                  host_bytes=64 * 2**30)
    assert fits == []  # 10 batches of 1.2 GiB
    (problem,) = bucket_memory_problems(["704x1280x121:1", "4320x7680x1000:8"], 1, num_workers=4,
                                        prefetch_factor=None, local_world_size=8, host_bytes=512 * 2**30)
    assert "bucket 4320x7680x1000:8 takes about 2,966.3 GiB" in problem and "10 batches in flight" in problem
    assert "8 local rank(s)" in problem and "512.0 GiB available" in problem
    config = override(make_config(), ["experiment=demo_edge_tiny", "data_train=custom_buckets",
                                      f"dataloader_train.dataset.root={mixed_root}",
                                      "dataloader_train.dataset.buckets=[32x48x8:2,4320x7680x1000:8]"])
    problems = check_run(config, world_size=1, local_world_size=1, device_type="cpu")
    assert any("bucket 4320x7680x1000:8 takes about" in p for p in problems), problems
    config = override(config, ["dataloader_train.dataset.buckets=[32x48x8:0]"])
    problems = check_run(config, world_size=1, local_world_size=1, device_type="cpu")
    assert any("dataloader_train.dataset.buckets: bucket '32x48x8:0'" in p for p in problems), problems


def _tiny_minilm_root(root):
    """Clips with the demo encoder's embedding shape (minilm_l6/, D = 384), as the demo experiments read."""
    import os

    make_tiny_dataset(root, stems=[f"land{i}" for i in range(4)], num_frames=20, size=(32, 48), text_dim=384)
    make_tiny_dataset(root, stems=[f"square{i}" for i in range(2)], num_frames=20, size=(32, 32), text_dim=384)
    os.rename(os.path.join(root, "t5_xxl"), os.path.join(root, "minilm_l6"))
    return str(root)


@pytest.mark.parametrize("experiment", ["demo_edge_tiny", "transfer2p5_tiny"])
def test_buckets_compose_with_a_shipped_experiment_without_overrides(tmp_path, monkeypatch, experiment):
    """The experiment's num_frames, resolution and batch_size (for one shape) are replaced by the buckets, and the
    start-up line says so, with the clips of each bucket (it used to fail at the dataset with a traceback)."""
    import importlib.util

    from configs.train import make_config
    from cosmos_transfer.config.compose import override
    from cosmos_transfer.config.lazy import instantiate
    from cosmos_transfer.trainer.logging import _clips
    from tests.helpers import REPO_DIR

    root = _tiny_minilm_root(tmp_path / "clips")
    overrides = [f"experiment={experiment}", "data_train=custom_buckets", f"dataloader_train.dataset.root={root}",
                 "dataloader_train.dataset.buckets=[32x48x17:2,32x32x17:1]"]
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "out"))
    spec = importlib.util.spec_from_file_location("train_script", f"{REPO_DIR}/scripts/train.py")
    train_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_script)
    assert train_script.run(["--dryrun", "--", *overrides]) == 0

    config = override(make_config(), overrides + ["dataloader_train.num_workers=0"])  # workers: slow on 2 cores
    loader = instantiate(config.dataloader_train)
    assert {tuple(batch["video"].shape) for batch in loader} == {(2, 3, 17, 32, 48), (1, 3, 17, 32, 32)}
    line = _clips(loader)
    assert line.startswith(f"6 in {root}, by bucket (HxWxT:B clips): 32x48x17:2 4, 32x32x17:1 2")
    assert "num_frames=17, resolution=[32, 32], batch_size=2 not used" in line
    assert "resolution" not in line.split("(the buckets")[0]  # no single resolution claimed for the data


def test_resuming_with_other_buckets_names_both_lists(mixed_root):
    from cosmos_transfer.config.errors import DataError

    dataset = BucketedVideoDataset(mixed_root, BUCKETS, **TEXT)
    state = build_bucket_dataloader(dataset, seed=2, rank=0, world_size=1).state_dict()
    other = BucketedVideoDataset(mixed_root, ["32x48x8:1", "32x48x4:2", "48x32x8:2"], **TEXT)
    with pytest.raises(DataError, match=r"\{'32x48x8:2': 6, '32x48x4:2': 4, '48x32x8:2': 4\} than this run's "
                                        r"\{'32x48x8:1': 6, '32x48x4:2': 4, '48x32x8:2': 4\}"):
        build_bucket_dataloader(other, seed=2, rank=0, world_size=1).load_state_dict(state)


def test_the_clips_per_rank_check_counts_the_buckets_batches_not_the_experiments(mixed_root):
    """With buckets the experiment's dataloader_train.batch_size is not used: the check that every rank gets a batch
    counted it all the same (demo_edge_tiny's 2 x 8 ranks > 14 clips), refusing a run whose buckets take 1."""
    from configs.train import make_config
    from cosmos_transfer.config.compose import override
    from cosmos_transfer.preflight import world_size_problems

    def config(buckets):
        return override(make_config(), ["experiment=demo_edge_tiny", "data_train=custom_buckets",
                                        f"dataloader_train.dataset.root={mixed_root}",
                                        f"dataloader_train.dataset.buckets={buckets}"])

    check = dict(world_size=8, local_world_size=8, device_type="cpu", cuda_devices=0)
    assert world_size_problems(config("[32x48x8:1,48x32x8:1]"), **check) == []
    (problem,) = world_size_problems(config("[32x48x8:2,48x32x8:4]"), **check)
    assert "for 8 rank(s) x batch 2 (the smallest bucket batch)" in problem
