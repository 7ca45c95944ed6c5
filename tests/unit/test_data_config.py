"""The data_train / data_val options: a user folder, prepared by prepare_dataset.py, instantiated from the config."""

import importlib.util
import os

import pytest
import torch

from configs.train import make_config
from cosmos_transfer.config.compose import override
from cosmos_transfer.config.lazy import instantiate
from tests.tiny_datasets import make_tiny_dataset, make_tiny_t5
from tests.helpers import REPO_DIR as REPO



def _prepare_dataset_main():
    spec = importlib.util.spec_from_file_location("prepare_dataset", os.path.join(REPO, "scripts", "prepare_dataset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_user_folder_prepared_then_loaded_from_the_data_train_config(tmp_path):
    root = make_tiny_dataset(tmp_path / "mine", stems=["a", "b", "c", "d"])
    for name in os.listdir(os.path.join(root, "t5_xxl")):
        os.remove(os.path.join(root, "t5_xxl", name))  # prepare_dataset computes them
    t5 = make_tiny_t5(tmp_path / "t5")
    main = _prepare_dataset_main()
    assert main([root, "--encoder", t5, "--max-length", "16", "--num-frames", "5", "--resolution", "32x48"]) == 0

    config = override(make_config(), [
        "data_train=custom", "data_val=custom", f"dataloader_train.dataset.root={root}",
        # CPU-sized: the custom option is 121 frames at 720p with T5-XXL's 512 x 1024 embeddings.
        "dataloader_train.dataset.num_frames=5", "dataloader_train.dataset.resolution=[32,64]",
        "dataloader_train.dataset.text_embedding_length=16", "dataloader_train.dataset.text_embedding_dim=16",
        "dataloader_train.batch_size=2", "dataloader_train.num_workers=0",
    ])  # fmt: skip
    assert config.dataloader_val.dataset.root == root  # validation follows the one key
    loader = instantiate(config.dataloader_train)
    batch = next(iter(loader))
    assert batch["video"].shape == (2, 3, 5, 32, 64) and batch["video"].dtype == torch.uint8
    assert batch["control_input_edge"].shape == (2, 3, 5, 32, 64)
    assert batch["padding_mask"].shape == (2, 1, 32, 64) and batch["padding_mask"][0, 0, 0, 0] == 1
    assert batch["t5_text_embeddings"].shape == (2, 16, 16) and batch["t5_text_mask"].shape == (2, 16)
    assert batch["image_size"][0].tolist() == [32, 64, 32, 48]
    assert len(batch["caption"]) == 2 and batch["sample_index"].dtype == torch.int64
    assert loader.state_dict()["consumed"] == 2


def test_hint_key_group_sets_the_dataset_hint_keys():
    config = override(make_config(), ["data_train=custom", "hint_key=control_input_depth"])
    assert list(config.dataloader_train.dataset.hint_keys) == ["depth"]


@pytest.mark.parametrize("name, size", [("demo", [64, 64]), ("custom", [704, 1280]), ("custom_480", [432, 768])])
def test_data_options(name, size):
    config = override(make_config(), [f"data_train={name}", f"data_val={name}"])
    for loader in (config.dataloader_train, config.dataloader_val):
        assert loader._target_ == "cosmos_transfer.data.sampler.build_dataloader"
        assert list(loader.dataset.resolution) == size
    assert config.dataloader_train.shuffle and not config.dataloader_val.shuffle
    assert config.dataloader_train.dataset.is_train and not config.dataloader_val.dataset.is_train
