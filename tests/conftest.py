"""Shared test set-up: the repository root on sys.path (for `configs.*`, `experiments.*`), and caches/outputs kept
out of the user's home and the checkout."""

import os
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# Set once for the whole session (before any test runs) so subprocesses inherit them too. Tests that need their own
# values use monkeypatch.setenv.
_SESSION_DIR = tempfile.mkdtemp(prefix="cosmos_transfer_tests_")
os.environ["COSMOS_CACHE_DIR"] = os.path.join(_SESSION_DIR, "cache")
os.environ["OUTPUT_ROOT"] = os.path.join(_SESSION_DIR, "outputs")
os.environ.pop("COSMOS_EXPERIMENT_PATH", None)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes tens of seconds (e.g. sampling the shipped demo base); "
                                       "deselect with -m 'not slow'")


@pytest.fixture
def diffusers_without_torchvision(monkeypatch):
    """diffusers' Cosmos transformer and controlnet resize the padding mask with torchvision, which has no CPU build
    here: give them the stand-in of tests/helpers.py (nearest resize, as torchvision does)."""
    from diffusers.models.controlnets import controlnet_cosmos
    from diffusers.models.transformers import transformer_cosmos

    from tests.helpers import patch_torchvision

    patch_torchvision(monkeypatch, transformer_cosmos, controlnet_cosmos)
