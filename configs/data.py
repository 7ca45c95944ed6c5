"""Option groups `data_train` (package `dataloader_train`) and `data_val` (package `dataloader_val`).

- `demo`: the synthetic dataset of scripts/make_demo_dataset.py (datasets/demo/{train,val}: 64x64 clips of moving
  shapes, all-MiniLM-L6-v2 caption embeddings of 40 x 384).
- `custom`: your folders in our layout (docs/DATASETS.md), 121 frames at 720p (704 x 1280), T5-XXL embeddings
  (512 x 1024) in t5_xxl/, as Cosmos-Transfer1-7B is trained. Training and validation clips in two folders
  (validation reads the training folder when only that one is set; first window of each clip, named presets):

      data_train=custom data_val=custom dataloader_train.dataset.root=datasets/my_clips/train \
          dataloader_val.dataset.root=datasets/my_clips/val

- `custom_480`: the same at 480p (432 x 768).
- `custom_tiny`: the same folders at CPU size: 17 frames at 32 x 32, embeddings of the demo encoder
  (`prepare_dataset.py --text_encoder minilm`: minilm_l6/, 40 x 384), no loader workers. The CPU walkthrough of
  docs/DATASETS.md trains on it.

- `custom_buckets` (data_train only): the same folders with clips of many sizes and lengths, batched by bucket
  (cosmos_transfer/data/buckets.py, docs/DATASETS.md "Buckets"). The default buckets are NVIDIA's 720p size per aspect
  ratio (16:9, 9:16, 1:1, 4:3, 3:4) at 121 frames, batch 1; list your own as HxWxT:B:

      data_train=custom_buckets dataloader_train.dataset.root=datasets/my_clips/train \
          'dataloader_train.dataset.buckets=[704x1280x121:1,432x768x121:2,432x768x57:4]'

  It composes with any experiment: the experiment's num_frames, resolution and batch_size are the buckets' to
  decide, not used, and the start-up line says so with the clips of each bucket.

Every loader is `build_dataloader` (`build_bucket_dataloader` for buckets): sharded by data-parallel rank, resumable
(its state is saved with checkpoints).
Hint keys are set by the `hint_key` group; the default here is the edge control.
"""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.config.lazy import LazyCall as L

DEMO_TEXT = dict(text_embedding_folder="minilm_l6", text_embedding_length=40, text_embedding_dim=384)
T5_XXL_TEXT = dict(text_embedding_folder="t5_xxl", text_embedding_length=512, text_embedding_dim=1024)


def _loader(dataset: dict, is_train: bool, batch_size: int, num_workers: int) -> dict:
    return L("cosmos_transfer.data.sampler.build_dataloader")(
        dataset=dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        shuffle=is_train,
        seed=0,
        pin_memory=num_workers > 0,
        persistent_workers=num_workers > 0,
    )


def demo_loader(split: str, is_train: bool) -> dict:
    """The demo dataset written by scripts/make_demo_dataset.py (64x64 clips of moving shapes)."""
    dataset = L("cosmos_transfer.data.dataset.VideoDataset")(
        root=f"datasets/demo/{split}",
        num_frames=17,
        resolution=[64, 64],
        hint_keys=["edge"],
        is_train=is_train,
        **DEMO_TEXT,
    )
    return _loader(dataset, is_train, batch_size=1, num_workers=0)


def custom_loader(is_train: bool, resolution: list[int], num_frames: int = 121, text: dict = T5_XXL_TEXT,
                  num_workers: int | None = None) -> dict:
    """User folders in our layout (or Cosmos-Transfer1's): set dataloader_train.dataset.root (and _val's)."""
    dataset = L("cosmos_transfer.data.dataset.VideoDataset")(
        # Validation follows the training folder unless dataloader_val.dataset.root is set as well.
        root="datasets/my_clips/train" if is_train else "${dataloader_train.dataset.root}",
        num_frames=num_frames,
        resolution=resolution,
        fps=None,  # consecutive frames, as Cosmos samples them; set e.g. 24 to resample faster clips
        hint_keys=["edge"],
        is_train=is_train,
        max_bad_fraction=0.05,
        **text,
    )
    # 0.1-0.3 samples/s per worker at 720p with the edge control (BENCHMARKS.md): 4 workers keep ahead of a 7B step.
    if num_workers is None:
        num_workers = 4 if is_train else 1
    return _loader(dataset, is_train, batch_size=1, num_workers=num_workers)


# NVIDIA's 720p frame per aspect ratio (Cosmos VIDEO_RES_SIZE_INFO["720"]: 16:9 1280x704, 9:16, 1:1 960x960, 4:3
# 960x704, 3:4), as HxW, at Cosmos-Transfer1-7B's 121 frames and batch 1.
BUCKETS_720 = ["704x1280x121:1", "1280x704x121:1", "960x960x121:1", "704x960x121:1", "960x704x121:1"]


def bucket_loader(buckets: list[str] = BUCKETS_720, text: dict = T5_XXL_TEXT, num_workers: int = 4) -> dict:
    """User folders in our layout, each clip at its bucket's size and length (cosmos_transfer/data/buckets.py)."""
    dataset = L("cosmos_transfer.data.buckets.BucketedVideoDataset")(
        root="datasets/my_clips/train",
        buckets=list(buckets),
        fps=None,
        hint_keys=["edge"],
        is_train=True,
        max_bad_fraction=0.05,
        **text,
    )
    return L("cosmos_transfer.data.buckets.build_bucket_dataloader")(
        dataset=dataset, shuffle=True, seed=0, num_workers=num_workers, pin_memory=num_workers > 0,
        persistent_workers=num_workers > 0,
    )


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="data_train", package="dataloader_train", name="demo", node=demo_loader("train", True))
    cs.store(group="data_val", package="dataloader_val", name="demo", node=demo_loader("val", False))
    for name, resolution in (("custom", [704, 1280]), ("custom_480", [432, 768])):
        cs.store(group="data_train", package="dataloader_train", name=name, node=custom_loader(True, resolution))
        cs.store(group="data_val", package="dataloader_val", name=name, node=custom_loader(False, resolution))
    cs.store(group="data_train", package="dataloader_train", name="custom_buckets", node=bucket_loader())
    # CPU size: a few minutes of training on 2 cores (docs/DATASETS.md, "Your own clips on a CPU").
    for is_train, group, package in ((True, "data_train", "dataloader_train"), (False, "data_val", "dataloader_val")):
        node = custom_loader(is_train, [32, 32], num_frames=17, text=DEMO_TEXT, num_workers=0)
        cs.store(group=group, package=package, name="custom_tiny", node=node)
