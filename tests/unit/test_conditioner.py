"""Conditioner: pass-through of the conditioning inputs and classifier-free-guidance dropout of the text."""

import pytest
import torch

from cosmos_transfer.diffusion.conditioner import Condition, VideoConditioner


def make_batch(batch_size: int = 4, length: int = 6, dim: int = 8) -> dict:
    torch.manual_seed(0)
    return {
        "t5_text_embeddings": torch.randn(batch_size, length, dim) + 3.0,  # no exact zeros
        "t5_text_mask": torch.ones(batch_size, length),
        "fps": torch.full((batch_size,), 24.0),
        "image_size": torch.tensor([[32.0, 48.0, 32.0, 40.0]] * batch_size),
        "padding_mask": torch.zeros(batch_size, 1, 32, 48),
    }


def test_passes_conditioning_inputs_through():
    batch = make_batch()
    condition = VideoConditioner(text_dropout_rate=0.0)(batch)
    assert isinstance(condition, Condition)
    torch.testing.assert_close(condition.crossattn_emb, batch["t5_text_embeddings"])
    torch.testing.assert_close(condition.crossattn_mask, batch["t5_text_mask"])
    torch.testing.assert_close(condition.fps, batch["fps"])
    torch.testing.assert_close(condition.image_size, batch["image_size"])
    assert condition.padding_mask.shape == (4, 1, 32, 48)
    assert set(condition.network_kwargs()) == {"crossattn_emb", "crossattn_mask", "fps", "padding_mask"}
    reduced = VideoConditioner(use_fps=False, use_image_size=False, use_padding_mask=False)(
        {"t5_text_embeddings": batch["t5_text_embeddings"]}
    )
    assert reduced.fps is None and reduced.padding_mask is None
    torch.testing.assert_close(reduced.crossattn_mask, torch.ones(4, 6))  # no mask given: every token is real


def test_observed_text_dropout_rate_matches_config():
    batch = make_batch(batch_size=20_000, length=2, dim=2)
    conditioner = VideoConditioner(text_dropout_rate=0.2).train()
    condition = conditioner(batch, generator=torch.Generator().manual_seed(3))
    dropped = (condition.crossattn_emb.abs().sum(dim=(1, 2)) == 0).float()
    assert dropped.mean().item() == pytest.approx(0.2, abs=0.01)
    # dropped samples lose the whole embedding, kept ones are untouched; the mask is never dropped (as Cosmos)
    kept = dropped == 0
    torch.testing.assert_close(condition.crossattn_emb[kept], batch["t5_text_embeddings"][kept])
    torch.testing.assert_close(condition.crossattn_mask, batch["t5_text_mask"])
    rate_05 = VideoConditioner(text_dropout_rate=0.5).train()(batch, generator=torch.Generator().manual_seed(4))
    assert (rate_05.crossattn_emb.abs().sum(dim=(1, 2)) == 0).float().mean().item() == pytest.approx(0.5, abs=0.015)


def test_text_dropout_is_deterministic_under_a_generator_or_the_global_seed():
    batch = make_batch(batch_size=64)
    conditioner = VideoConditioner(text_dropout_rate=0.3).train()
    a = conditioner(batch, generator=torch.Generator().manual_seed(7)).crossattn_emb
    b = conditioner(batch, generator=torch.Generator().manual_seed(7)).crossattn_emb
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.manual_seed(11)
    c = conditioner(batch).crossattn_emb
    torch.manual_seed(11)
    d = conditioner(batch).crossattn_emb
    torch.testing.assert_close(c, d, rtol=0, atol=0)
    other = conditioner(batch, generator=torch.Generator().manual_seed(8)).crossattn_emb
    assert not torch.equal(a, other)  # a different seed drops different samples


def test_no_dropout_in_eval_mode():
    batch = make_batch(batch_size=256)
    condition = VideoConditioner(text_dropout_rate=0.9).eval()(batch)
    torch.testing.assert_close(condition.crossattn_emb, batch["t5_text_embeddings"])


def test_condition_and_uncondition_use_empty_text_or_negative_prompt():
    batch = make_batch()
    conditioner = VideoConditioner(text_dropout_rate=0.2).train()
    condition, uncondition = conditioner.condition_and_uncondition(batch)
    torch.testing.assert_close(condition.crossattn_emb, batch["t5_text_embeddings"])  # never dropped here
    assert torch.count_nonzero(uncondition.crossattn_emb) == 0
    torch.testing.assert_close(uncondition.fps, condition.fps)
    batch["neg_t5_text_embeddings"] = torch.randn(4, 6, 8)
    batch["neg_t5_text_mask"] = torch.zeros(4, 6)
    batch["neg_t5_text_mask"][:, :2] = 1
    _, negative = conditioner.condition_and_uncondition(batch)
    torch.testing.assert_close(negative.crossattn_emb, batch["neg_t5_text_embeddings"])
    torch.testing.assert_close(negative.crossattn_mask, batch["neg_t5_text_mask"])


def test_clear_errors_for_bad_batches():
    conditioner = VideoConditioner()
    with pytest.raises(KeyError, match="t5_text_embeddings"):
        conditioner({"fps": torch.ones(1)})
    with pytest.raises(ValueError, match=r"\[B, L, D\]"):
        conditioner({"t5_text_embeddings": torch.zeros(2, 3)})
    batch = make_batch()
    batch["t5_text_mask"] = torch.ones(4, 5)
    with pytest.raises(ValueError, match="t5_text_mask"):
        conditioner(batch)
    batch = make_batch()
    del batch["fps"]
    with pytest.raises(KeyError, match="use_fps=False"):
        conditioner(batch)
    with pytest.raises(ValueError, match="text_dropout_rate"):
        VideoConditioner(text_dropout_rate=1.5)
