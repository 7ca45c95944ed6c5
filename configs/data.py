"""Option groups `data_train` (package `dataloader_train`) and `data_val` (package `dataloader_val`)."""

from hydra.core.config_store import ConfigStore

from cosmos_transfer.lazy_config import LazyCall as L


def demo_loader(split: str, is_train: bool) -> dict:
    """The demo dataset written by scripts/make_demo_dataset.py (64x64 clips of moving shapes)."""
    return L("cosmos_transfer.data.sampler.build_dataloader")(
        dataset=L("cosmos_transfer.data.dataset.VideoDataset")(
            root=f"datasets/demo/{split}",
            num_frames=17,
            resolution=[64, 64],
            hint_keys=["edge"],
            is_train=is_train,
        ),
        batch_size=1,
        num_workers=0,
        shuffle=is_train,
    )


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="data_train", package="dataloader_train", name="demo", node=demo_loader("train", True))
    cs.store(group="data_val", package="dataloader_val", name="demo", node=demo_loader("val", False))
