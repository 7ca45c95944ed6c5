"""Text embeddings projected offline (prepare_dataset.py --project-with) carry the fingerprint of the crossattn_proj
that made them, and a run whose base has another one is refused before building, naming both (issue 25: it used to
train silently on text projected by another base)."""

import os

import torch
from safetensors.torch import save_file

from cosmos_transfer.data.text_embeddings import projection_mismatch, save_text_embedding
from cosmos_transfer.data.text_encoders import CrossAttnProjection
from tests.tiny_datasets import make_tiny_dataset


def _base(path, seed: int) -> str:
    """A weights file holding only a Cosmos-2.5 base's crossattn_proj (8 -> 4), in NVIDIA's names."""
    generator = torch.Generator().manual_seed(seed)
    save_file({"net.crossattn_proj.0.weight": torch.randn(4, 8, generator=generator),
               "net.crossattn_proj.0.bias": torch.randn(4, generator=generator)}, str(path))
    return str(path)


def _projected_root(tmp_path, base: str) -> str:
    root = make_tiny_dataset(tmp_path / "clips", stems=["a", "b"], text_dim=4)
    projection = CrossAttnProjection(base)
    for stem in ("a", "b"):
        save_text_embedding(os.path.join(root, "reason1_projected", f"{stem}.safetensors"),
                            projection(torch.randn(5, 8).bfloat16()), encoder="Cosmos-Reason1-7B", max_length=5,
                            caption=stem, extra_metadata=projection.metadata())
    return root


def test_projected_embeddings_of_another_base_are_refused_naming_both(tmp_path):
    made_with, other = _base(tmp_path / "made_with.safetensors", 0), _base(tmp_path / "other.safetensors", 1)
    root = _projected_root(tmp_path, made_with)
    folder = os.path.join(root, "reason1_projected")
    assert projection_mismatch(folder, made_with) is None
    problem = projection_mismatch(folder, other)
    made = CrossAttnProjection(made_with).fingerprint
    assert f"projected by crossattn_proj of made_with.safetensors (sha256 {made}" in problem
    assert f"the base {other} has another crossattn_proj (sha256 {CrossAttnProjection(other).fingerprint})" in problem
    assert f"--project-with {other} --overwrite" in problem
    assert projection_mismatch(os.path.join(root, "t5_xxl"), other) is None  # raw embeddings: nothing to compare
    transfer1 = tmp_path / "transfer1.pt"  # not a 2.5 file: its own loading names it, not this check
    torch.save({"net.blocks.block0.blocks.0.block.attn.to_q.0.weight": torch.zeros(2, 2)}, str(transfer1))
    assert projection_mismatch(folder, str(transfer1)) is None

    from configs.train import make_config
    from cosmos_transfer.config.compose import override
    from cosmos_transfer.preflight import check_run

    config = override(make_config(), ["experiment=transfer2p5_tiny", f"checkpoint.load_path={other}",
                                      f"dataloader_train.dataset.root={root}",
                                      "dataloader_train.dataset.text_embedding_folder=reason1_projected"])
    problems = check_run(config, world_size=1, local_world_size=1, device_type="cpu")
    assert sum("has another crossattn_proj" in p for p in problems) == 1, problems  # validation reads the same
    config = override(config, [f"checkpoint.load_path={made_with}"])
    assert not any("crossattn_proj" in p for p in check_run(config, world_size=1, local_world_size=1,
                                                            device_type="cpu"))
