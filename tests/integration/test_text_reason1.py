"""Cosmos-Reason1 caption embeddings as the Cosmos-2.5 family computes them, on a tiny random Qwen2.5-VL; their
projection by a base's crossattn_proj; scripts/prepare_dataset.py writing both and VideoDataset reading both.

In tests/integration because importing transformers' Qwen2.5-VL and building the tiny model takes ~10 s on an idle
2-core machine (a minute under load); each test is a few seconds after that."""

import importlib.util
import os

import pytest
import torch

from cosmos_transfer.checkpoints.files import WeightsFileError
from cosmos_transfer.data.dataset import VideoDataset
from cosmos_transfer.data.text_embeddings import load_text_embedding, text_embedding_metadata
from cosmos_transfer.data.text_encoders import (
    REASON1_SYSTEM_PROMPT,
    CrossAttnProjection,
    Reason1TextEncoder,
    TextEncoder,
    crossattn_proj_fingerprint,
    is_reason1_folder,
    load_text_encoder,
)
from cosmos_transfer.networks.dit_v2_5 import Cosmos25DiT
from tests.helpers import REPO_DIR as REPO
from tests.tiny_datasets import make_tiny_dataset, make_tiny_reason1, to_transfer2_5_layout

LAYERS, HIDDEN = 3, 32  # the tiny Reason1: embeddings of 3 x 32 = 96 per token (the real one: 28 x 3584 = 100,352)


@pytest.fixture(scope="module")
def reason1_dir(tmp_path_factory):
    return make_tiny_reason1(tmp_path_factory.mktemp("reason1"), num_layers=LAYERS, hidden_size=HIDDEN)


@pytest.fixture(scope="module")
def encoder(reason1_dir):
    return Reason1TextEncoder(reason1_dir, device="cpu")


def _nvidia_reference(encoder, caption, max_length=512):
    """NVIDIA's procedure written out independently (text_encoder.py compute_text_embeddings_online, FULL_CONCAT):
    the chat text, ids padded with the pad id to max_length, the language model run by hand layer by layer with no
    attention mask, each layer's output (the last one after the final norm) normalized with the unbiased std."""
    text = (f"<|im_start|>system\n{REASON1_SYSTEM_PROMPT}<|im_end|>\n"
            f"<|im_start|>user\n{caption}<|im_end|>\n")
    ids = encoder.tokenizer(text)["input_ids"][:max_length]
    ids = ids + [encoder.tokenizer.pad_token_id] * (max_length - len(ids))
    model = encoder.language_model
    outputs = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outputs.append(o[0] if isinstance(o, tuple) else o))
             for layer in model.layers]
    try:
        with torch.no_grad():
            last = model(input_ids=torch.tensor([ids])).last_hidden_state
    finally:
        for hook in hooks:
            hook.remove()
    states = outputs[:-1] + [last]  # hidden states 1..N; the N-th is after the final RMSNorm
    assert torch.allclose(model.norm(outputs[-1]), last)
    normalized = [(h - h.mean(-1, keepdim=True)) / (h.std(-1, keepdim=True) + 1e-8) for h in states]
    return torch.cat(normalized, dim=-1)[0].float(), len(text), ids


def test_embeddings_follow_nvidias_procedure(encoder):
    captions = ["clip a: a red square moves right", "a teal circle"]
    got = encoder.encode(captions)
    assert encoder.dim == LAYERS * HIDDEN
    for caption, embedding in zip(captions, got):
        expected, _, ids = _nvidia_reference(encoder, caption)
        assert embedding.shape == (512, LAYERS * HIDDEN) and embedding.dtype == torch.bfloat16
        assert encoder.token_ids(caption) == ids
        torch.testing.assert_close(embedding.float(), expected, rtol=1e-2, atol=2e-2)  # bf16 storage
        assert embedding[-1].abs().sum() > 0  # padding positions carry embeddings too (the 2.5 DiT sees them)
    # Each layer's block is normalized over its channels: mean 0, std 1 per token and layer.
    block = got[0].float().view(512, LAYERS, HIDDEN)
    torch.testing.assert_close(block.mean(-1), torch.zeros(512, LAYERS), atol=2e-2, rtol=0)
    torch.testing.assert_close(block.std(-1), torch.ones(512, LAYERS), atol=2e-2, rtol=0)


def test_caption_tokens_do_not_see_the_padding_and_long_captions_are_cut(reason1_dir, encoder):
    short = Reason1TextEncoder(reason1_dir, max_length=128)
    caption = "clip b: a red square moves left over the teal background"
    n = len([i for i in encoder.token_ids(caption) if i != encoder.tokenizer.pad_token_id])
    long_pad, short_pad = encoder.encode([caption])[0], short.encode([caption])[0]
    assert n < 128 and short_pad.shape == (128, LAYERS * HIDDEN)
    torch.testing.assert_close(long_pad[:n].float(), short_pad[:n].float(), rtol=0, atol=0)  # causal attention
    cut = Reason1TextEncoder(reason1_dir, max_length=8)
    assert len(cut.token_ids(caption)) == 8 and cut.encode([caption])[0].shape == (8, LAYERS * HIDDEN)


def test_the_folder_picks_the_encoder(reason1_dir, tmp_path):
    assert is_reason1_folder(reason1_dir)
    assert isinstance(load_text_encoder(reason1_dir), Reason1TextEncoder)
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    assert not is_reason1_folder(tmp_path)
    with pytest.raises(TypeError, match="list of captions"):
        load_text_encoder(reason1_dir).encode("one string")
    assert TextEncoder is not Reason1TextEncoder


def _base_file(tmp_path, text_width):
    """A tiny Cosmos-2.5 base with crossattn_proj text_width -> 16, saved in NVIDIA's layout (net.*, bf16)."""
    os.makedirs(tmp_path, exist_ok=True)
    torch.manual_seed(3)
    net = Cosmos25DiT(max_img_h=16, max_img_w=16, max_frames=4, in_channels=4, out_channels=4, model_channels=32,
                      num_blocks=1, num_heads=2, crossattn_emb_channels=16, use_crossattn_projection=True,
                      crossattn_proj_in_channels=text_width)
    path = str(tmp_path / "base_ema_bf16.pt")
    torch.save({"net." + k: v.to(torch.bfloat16) for k, v in net.state_dict().items()}, path)
    return net, path


def test_projection_is_the_nets_crossattn_proj(tmp_path, encoder):
    net, path = _base_file(tmp_path, LAYERS * HIDDEN)
    projection = CrossAttnProjection(path)
    raw = encoder.encode(["a red square"])[0]
    net.crossattn_proj.load_state_dict({k: v.float() for k, v in projection.module.state_dict().items()})
    with torch.no_grad():
        expected = net.crossattn_proj(raw.float())
    got = projection(raw)
    assert got.shape == (512, 16) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, rtol=1e-2, atol=1e-2)
    weight, bias = net.crossattn_proj[0].weight, net.crossattn_proj[0].bias
    assert projection.fingerprint == crossattn_proj_fingerprint(weight, bias)  # same values, any dtype
    assert projection.fingerprint != crossattn_proj_fingerprint(weight, bias + 1)
    with pytest.raises(ValueError, match="takes embeddings"):
        projection(torch.zeros(4, 7))
    torch.save({"net.t_embedding_norm.weight": torch.ones(4)}, str(tmp_path / "no_proj.pt"))
    with pytest.raises(ValueError, match="no crossattn_proj.0.weight"):
        CrossAttnProjection(str(tmp_path / "no_proj.pt"))
    (tmp_path / "cut.pt").write_bytes(open(path, "rb").read()[:500])
    with pytest.raises(WeightsFileError, match="damaged or incomplete"):
        CrossAttnProjection(str(tmp_path / "cut.pt"))


def _prepare_dataset_main():
    path = os.path.join(REPO, "scripts", "prepare_dataset.py")
    spec = importlib.util.spec_from_file_location("prepare_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_prepare_dataset_writes_raw_and_projected_and_the_dataset_reads_both(tmp_path, reason1_dir, capsys):
    root = to_transfer2_5_layout(make_tiny_dataset(tmp_path / "clips", stems=["a", "b"]))
    net, weights = _base_file(tmp_path, LAYERS * HIDDEN)
    main = _prepare_dataset_main()
    common = ["--num-frames", "5", "--resolution", "32x48"]
    assert main([root, "--text_encoder", reason1_dir, *common]) == 0
    assert main([root, "--text_encoder", reason1_dir, "--project-with", weights, *common]) == 0
    assert "2 of 2 clips usable" in capsys.readouterr().out
    raw = load_text_embedding(os.path.join(root, "reason1", "a.safetensors"))
    projected_path = os.path.join(root, "reason1_projected", "a.safetensors")
    projected = load_text_embedding(projected_path)
    assert raw.shape == (512, LAYERS * HIDDEN) and projected.shape == (512, 16)
    meta = text_embedding_metadata(projected_path)
    assert meta["projection"] == "crossattn_proj of base_ema_bf16.pt"
    assert meta["projection_sha256"] == CrossAttnProjection(weights).fingerprint
    assert meta["caption"] == "clip a: a red square moves right"
    torch.testing.assert_close(torch.from_numpy(projected), CrossAttnProjection(weights)(
        torch.from_numpy(raw).bfloat16()).float(), rtol=0, atol=0)  # the raw cache, projected

    kinds = {"reason1": LAYERS * HIDDEN, "reason1_projected": 16}
    for folder, dim in kinds.items():
        ds = VideoDataset(root, num_frames=5, resolution=(32, 48), text_embedding_folder=folder,
                          text_embedding_length=512, text_embedding_dim=dim)
        sample = ds[0]
        assert sample["t5_text_embeddings"].shape == (512, dim) and sample["t5_text_mask"].sum() == 512
        assert sample["caption"] == "clip a: a red square moves right"
    with pytest.raises(ValueError, match="D=16 .*already projected by crossattn_proj of base_ema_bf16.pt.*"
                                         "text_embeddings_projected=True.*text_embedding_dim=96"):
        VideoDataset(root, num_frames=5, resolution=(32, 48), text_embedding_folder="reason1_projected",
                     text_embedding_length=512, text_embedding_dim=LAYERS * HIDDEN)


def test_prepare_dataset_refuses_a_projection_it_cannot_apply(tmp_path, reason1_dir, capsys):
    root = to_transfer2_5_layout(make_tiny_dataset(tmp_path / "clips", stems=["a"]))
    _, other_width = _base_file(tmp_path, 40)
    main = _prepare_dataset_main()
    assert main([root, "--text_encoder", reason1_dir, "--project-with", other_width, "--num-frames", "5",
                 "--resolution", "32x48"]) == 2
    assert "takes 40-wide embeddings, but" in capsys.readouterr().err
    assert main([root, "--text_encoder", reason1_dir, "--project-with", str(tmp_path / "missing.pt"),
                 "--num-frames", "5", "--resolution", "32x48"]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([root, "--text_encoder", "minilm", "--project-with", other_width])
    assert "must be a Cosmos-Reason1" in capsys.readouterr().err


def test_prepare_dataset_does_not_mix_two_projections(tmp_path, reason1_dir, capsys):
    """Embeddings kept from a run with one base's crossattn_proj are not topped up with another base's."""
    root = to_transfer2_5_layout(make_tiny_dataset(tmp_path / "clips", stems=["a", "b"]))
    _, first = _base_file(tmp_path / "one", LAYERS * HIDDEN)
    torch.manual_seed(4)
    second = str(tmp_path / "two.pt")
    torch.save({"net.crossattn_proj.0.weight": torch.randn(16, LAYERS * HIDDEN).bfloat16(),
                "net.crossattn_proj.0.bias": torch.zeros(16).bfloat16()}, second)
    main = _prepare_dataset_main()
    common = ["--text_encoder", reason1_dir, "--num-frames", "5", "--resolution", "32x48"]
    assert main([root, *common, "--project-with", first]) == 0
    os.remove(os.path.join(root, "reason1_projected", "b.safetensors"))
    capsys.readouterr()
    assert main([root, *common, "--project-with", second]) == 2
    err = capsys.readouterr().err
    assert "a.safetensors was made with crossattn_proj of base_ema_bf16.pt" in err and "--overwrite" in err
    assert main([root, *common, "--project-with", second, "--overwrite"]) == 0
    assert text_embedding_metadata(os.path.join(root, "reason1_projected", "a.safetensors"))["projection"] == \
        "crossattn_proj of two.pt"
