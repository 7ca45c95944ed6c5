"""Errors of the datasets, samplers and loaders about user data are DataError (issue 25), so that every script
prints them as one paragraph (cosmos_transfer/cli.py run_script), not a traceback per rank; also when a loader
worker process meets them."""

import os

import pytest
import torch

from cosmos_transfer.cli import run_script
from cosmos_transfer.config.errors import DataError
from cosmos_transfer.data.dataset import VideoDataset
from cosmos_transfer.data.sampler import ResumableDistributedSampler, build_dataloader
from tests.tiny_datasets import make_tiny_dataset

TEXT = dict(text_embedding_length=16, text_embedding_dim=8)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("errors"), stems=["a", "b", "c"])


def test_dataset_settings_and_folders_are_data_errors(root, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [(dict(root=str(tmp_path / "nowhere")), "dataset folder not found"),
             (dict(root=str(tmp_path / "empty")), "no videos/ folder"),
             (dict(num_frames=0), "num_frames must be positive"),
             (dict(resolution="1080"), "unknown resolution '1080'"),
             (dict(resolution=[0, 32]), "resolution must be positive"),
             (dict(max_bad_fraction=2.0), "max_bad_fraction"),
             (dict(edge_preset="extreme"), "unknown edge_preset"),
             (dict(text_embedding_dim=16), "have D=8.*text_embedding_dim=16"),
             (dict(num_frames=50, max_bad_fraction=1.0), "no usable clips")]
    for change, message in cases:
        arguments = {**dict(root=root, num_frames=5, resolution=(32, 48), **TEXT), **change}
        with pytest.raises(DataError, match=message):
            VideoDataset(**arguments)


def test_too_many_bad_clips_is_a_data_error(tmp_path):
    root = make_tiny_dataset(tmp_path / "clips", stems=["a", "b", "c", "d"])
    os.remove(os.path.join(root, "metas", "a.txt"))
    with pytest.raises(DataError, match="1 of 4 clips .* are bad, more than max_bad_fraction=0"):
        VideoDataset(root, num_frames=5, resolution=(32, 48), **TEXT, max_bad_fraction=0.0)
    dataset = VideoDataset(root, num_frames=5, resolution=(32, 48), **TEXT, max_bad_fraction=0.5)
    for clip in dataset.clips:  # every clip goes bad after the check: found while loading
        with open(clip.video, "wb") as file:
            file.write(b"not a video")
    with pytest.raises(DataError, match="are bad, more than max_bad_fraction"):
        dataset[0]


def test_sampler_and_loader_refusals_are_data_errors(root):
    with pytest.raises(DataError, match="too small for 4 data-parallel ranks"):
        ResumableDistributedSampler(3, rank=0, world_size=4)
    dataset = VideoDataset(root, num_frames=5, resolution=(32, 48), **TEXT)
    with pytest.raises(DataError, match="fewer than one batch of 8"):
        build_dataloader(dataset, batch_size=8, rank=0, world_size=1)
    state = build_dataloader(dataset, batch_size=1, seed=1, rank=0, world_size=1).state_dict()
    with pytest.raises(DataError, match="saved with seed=1 but this run has seed=2"):
        build_dataloader(dataset, batch_size=1, seed=2, rank=0, world_size=1).load_state_dict(state)


class _BrokenDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, key):
        raise DataError("clip X: something about the user's data")


def test_a_data_error_in_a_loader_worker_keeps_its_own_one_paragraph_message(capsys):
    """torch re-raises a worker's exception with the worker's traceback as its message: the loader gives back the
    original message, so that run_script prints one paragraph."""
    loader = build_dataloader(_BrokenDataset(), batch_size=1, rank=0, world_size=1, num_workers=1)
    with pytest.raises(DataError) as caught:
        next(iter(loader))
    assert str(caught.value) == "clip X: something about the user's data"

    def main():
        raise caught.value

    assert run_script("train", main) == 2
    assert capsys.readouterr().err == "train: error: clip X: something about the user's data\n"


def test_a_bad_control_file_is_a_bad_clip_naming_it():
    from cosmos_transfer.data.controls import cosmos_keypoints_to_array
    from cosmos_transfer.data.video import BadSampleError

    with pytest.raises(BadSampleError, match="kp.pickle: frame 0: a person lacks"):
        cosmos_keypoints_to_array({0: [{"body-keypoints": [[0, 0, 1]] * 91}]}, [0], "kp.pickle")
    with pytest.raises(BadSampleError, match="expected 133 keypoints x 3"):
        cosmos_keypoints_to_array({0: [{"body-keypoints": [[0, 0, 1]] * 90, "hand-keypoints": [[0, 0, 1]] * 42}]},
                                  [0], "kp.pickle")
