"""A model built on the meta device (memory accounting, preflight, the trainer's meta build) must not leave meta
tensors behind in modules it imports on the way: a module imported first inside `torch.device("meta")` creates its
module-level tensors there for the rest of the process (diffusers' Cosmos VAE wavelet table did, and every later
AutoencoderKLCosmos in the process then failed with "Tensor on device cpu is not on the expected device meta")."""

import subprocess
import sys

from tests.helpers import REPO_DIR

SCRIPT = """
import sys
from cosmos_transfer import memory
from cosmos_transfer.config.lazy import LazyDict
assert "diffusers" not in sys.modules
config = LazyDict({"_target_": "cosmos_transfer.tokenizers.wan.WanVAETokenizer", "load_weights": False})
memory.model_memory_from_config(config)
from diffusers.models.autoencoders import autoencoder_kl_cosmos
print(autoencoder_kl_cosmos._WAVELETS["haar"].device)
"""


def test_a_meta_build_leaves_no_meta_tensor_in_the_modules_it_imports():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO_DIR, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "cpu"
