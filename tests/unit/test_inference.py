"""Generation pipeline end to end on CPU at tiny size: a real (tiny) ControlDiffusionModel, windows, weights, seeds."""

import numpy as np
import pytest
import torch
from torch import nn

from cosmos_transfer.data.text_embeddings import save_text_embedding
from cosmos_transfer.diffusion.conditioner import VideoConditioner
from cosmos_transfer.diffusion.model_ctrl import ControlDiffusionModel
from cosmos_transfer.inference.controls import prepare_inputs
from cosmos_transfer.inference.pipeline import SamplingOptions, encode_text, generate_video
from cosmos_transfer.inference.spec import SpecError, parse_spec
from cosmos_transfer.networks.dit import GeneralDIT
from cosmos_transfer.networks.dit_ctrl import GeneralDITControl
from cosmos_transfer.video_io import write_video

TEXT_DIM = 8


class CausalPairTokenizer(nn.Module):
    """Stand-in causal tokenizer: frame 0 alone, then pairs of frames averaged (1 + 2k -> 1 + k), 2x2 unshuffle."""

    latent_channels = 12
    spatial_compression = 2
    temporal_compression = 2

    def latent_num_frames(self, n):
        if (n - 1) % 2:
            raise ValueError(f"cannot tokenize {n} frames")
        return 1 + (n - 1) // 2

    def pixel_num_frames(self, k):
        return 1 + 2 * (k - 1)

    def encode(self, video):
        b, c, t, h, w = video.shape
        rest = video[:, :, 1:].reshape(b, c, (t - 1) // 2, 2, h, w).mean(3)
        frames = torch.cat([video[:, :, :1], rest], dim=2)
        flat = frames.permute(0, 2, 1, 3, 4).reshape(-1, c, h, w)
        latent = nn.functional.pixel_unshuffle(flat, 2)
        return latent.reshape(b, -1, 12, h // 2, w // 2).permute(0, 2, 1, 3, 4)

    def decode(self, latent):
        b, _, k, h, w = latent.shape
        flat = latent.permute(0, 2, 1, 3, 4).reshape(b * k, 12, h, w)
        frames = nn.functional.pixel_shuffle(flat, 2).reshape(b, k, 3, h * 2, w * 2).permute(0, 2, 1, 3, 4)
        return torch.cat([frames[:, :, :1], frames[:, :, 1:].repeat_interleave(2, dim=2)], dim=2)


def make_model(video2world=True, seed=0, hint_keys=("edge",)):
    torch.manual_seed(seed)
    net_kwargs = dict(max_img_h=16, max_img_w=16, max_frames=8, in_channels=12 + int(video2world), out_channels=12,
                      model_channels=32, num_blocks=2, num_heads=2, crossattn_emb_channels=TEXT_DIM,
                      adaln_lora_dim=8)
    net = GeneralDIT(**net_kwargs)
    control = GeneralDITControl(num_control_blocks=1, hint_channels=12, **net_kwargs)
    model = ControlDiffusionModel(net, CausalPairTokenizer(), VideoConditioner(), net_ctrl=control,
                                  hint_keys=list(hint_keys), video2world=video2world, max_condition_frames=1)
    with torch.no_grad():  # the zero-initialized control layers would make the control invisible: wake them up
        for parameter in model.net_ctrl.parameters():
            if parameter.abs().sum() == 0:
                parameter.normal_(0, 0.3)
    return model.eval()


def _input_video(num_frames, size=16):
    frames = np.full((num_frames, size, size, 3), 60, np.uint8)
    for t in range(num_frames):
        frames[t, 4:12, 2 + t % 6 : 8 + t % 6] = 230
    return frames


@pytest.fixture
def spec_files(tmp_path):
    paths = {"input": str(tmp_path / "input.mp4"), "prompt": str(tmp_path / "prompt.safetensors"),
             "negative": str(tmp_path / "negative.safetensors"), "zeros": str(tmp_path / "zeros.mp4")}
    write_video(paths["input"], _input_video(12), fps=8, crf=0)
    write_video(paths["zeros"], np.zeros((12, 16, 16, 3), np.uint8), fps=8, crf=0)
    rng = np.random.default_rng(0)
    save_text_embedding(paths["prompt"], rng.normal(size=(3, TEXT_DIM)).astype(np.float32), encoder="test",
                        max_length=6, caption="a box")
    save_text_embedding(paths["negative"], rng.normal(size=(2, TEXT_DIM)).astype(np.float32), encoder="test",
                        max_length=6, caption="blurry")
    return paths


def _prepare(files, weight=1.0, negative=False):
    data = {"prompt_embedding": files["prompt"], "input_video_path": files["input"], "edge": {"control_weight": weight}}
    if negative:
        data["negative_prompt_embedding"] = files["negative"]
    spec = parse_spec(data)
    return prepare_inputs(spec, (16, 16)), encode_text(spec, length=6)


@pytest.mark.slow
def test_long_video_windows_are_conditioned_on_the_previous_window(spec_files):
    model = make_model()
    inputs, text = _prepare(spec_files)
    decoded, conditions = [], []
    original_decode, original_generate = model.decode, model.generate_samples

    def recording_decode(latent):
        video = original_decode(latent)
        decoded.append(video.clone())
        return video

    def recording_generate(batch, **kwargs):
        conditions.append(kwargs["condition_latent"])
        assert batch["control_input_edge"].shape == (1, 3, 5, 16, 16)
        return original_generate(batch, **kwargs)

    model.decode, model.generate_samples = recording_decode, recording_generate
    video = generate_video(model, inputs, text, window_frames=5, offload_tokenizer=True,
                           options=SamplingOptions(num_steps=3, guidance=0.0, seed=3))
    # 12 frames in windows of 5 overlapping by 1: frames 0-4, 4-8, 8-12 (the last padded past the end)
    assert video.shape == (12, 16, 16, 3) and video.dtype == np.uint8
    assert len(decoded) == 3
    assert conditions[0] is None and all(c.shape == (1, 12, 1, 8, 8) for c in conditions[1:])
    for previous, following in zip(decoded, decoded[1:]):
        # no seam: the next window starts exactly on the previous window's last frame
        torch.testing.assert_close(following[:, :, 0].clamp(-1, 1), previous[:, :, -1].clamp(-1, 1),
                                   atol=1e-5, rtol=0)
    # the output is each window's new frames, in order
    expected = torch.cat([decoded[0][0, :, :5], decoded[1][0, :, 1:5], decoded[2][0, :, 1:4]], dim=1)
    expected = ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    np.testing.assert_array_equal(video, expected)


@pytest.mark.slow
def test_seed_weights_and_guidance(spec_files):
    model = make_model()
    options = SamplingOptions(num_steps=1, guidance=0.0, seed=5, sampler="euler")

    def run(weight=1.0, negative=False, **changes):
        inputs, text = _prepare(spec_files, weight=weight, negative=negative)
        inputs.controls = {k: v[:5] for k, v in inputs.controls.items()}  # one window
        inputs.weights = {k: (w[:5] if isinstance(w, np.ndarray) else w) for k, w in inputs.weights.items()}
        fields = {**options.__dict__, **changes}
        return generate_video(model, inputs, text, window_frames=5, options=SamplingOptions(**fields))

    base = run()
    np.testing.assert_array_equal(base, run())  # a seed gives the same video
    assert not np.array_equal(base, run(seed=6))
    off = run(weight=0.0)
    assert not np.array_equal(base, off)  # the control acts
    np.testing.assert_array_equal(off, run(weight=spec_files["zeros"]))  # an all-black weight video = weight 0
    assert not np.array_equal(run(num_steps=2), run(num_steps=2, sigma_min=1.0))  # stops at another noise level
    guided = run(guidance=3.0, negative=True, sampler="heun", num_steps=2)
    assert guided.shape == base.shape and not np.array_equal(guided, base)


@pytest.mark.slow
def test_model_without_video2world_generates_windows_independently(spec_files):
    model = make_model(video2world=False)
    inputs, text = _prepare(spec_files)
    notes = []
    video = generate_video(model, inputs, text, window_frames=5, options=SamplingOptions(num_steps=1, guidance=0),
                           progress=notes.append)
    assert video.shape == (12, 16, 16, 3)
    assert any("not video2world" in note for note in notes)
    assert sum(note.startswith("window") for note in notes) == 3  # 0-4, 5-9, 10-14


def test_spec_controls_must_match_the_model(spec_files, tmp_path):
    model = make_model()
    depth = tmp_path / "depth.mp4"
    write_video(depth, _input_video(12), fps=8, crf=0)
    spec = parse_spec({"prompt_embedding": spec_files["prompt"], "input_video_path": spec_files["input"],
                       "depth": {"input_control": str(depth)}}, source="spec.json")
    inputs, text = prepare_inputs(spec, (16, 16)), encode_text(spec, length=6)
    with pytest.raises(SpecError, match=r"take \['edge'\], the spec gives \['depth'\]: this model has no branch"):
        generate_video(model, inputs, text, window_frames=5)
    with pytest.raises(ValueError, match="window_frames=4 does not map to whole latent frames"):
        inputs, text = _prepare(spec_files)
        generate_video(model, inputs, text, window_frames=4)


def test_text_prompt_needs_an_encoder(spec_files):
    spec = parse_spec({"prompt": "a box", "input_video_path": spec_files["input"], "edge": {}}, source="spec.json")
    with pytest.raises(SpecError, match="no text encoder was given"):
        encode_text(spec, length=6)


def test_branches_the_spec_leaves_out_run_with_weight_zero(spec_files):
    model = make_model(hint_keys=("edge", "vis"))
    options = SamplingOptions(num_steps=1, guidance=0.0, sampler="euler")

    def run(controls):
        spec = parse_spec({"prompt_embedding": spec_files["prompt"], "input_video_path": spec_files["input"],
                           **controls})
        notes = []
        video = generate_video(model, prepare_inputs(spec, (16, 16), max_frames=5), encode_text(spec, length=6),
                               window_frames=5, options=options, progress=notes.append)
        return video, notes

    edge_only, notes = run({"edge": {}})
    assert any("leaves out ['vis']" in note for note in notes)
    explicit, _ = run({"edge": {}, "vis": {"control_weight": 0.0}})
    np.testing.assert_array_equal(edge_only, explicit)
    both, _ = run({"edge": {}, "vis": {"control_weight": 1.0}})
    assert not np.array_equal(edge_only, both)


def test_official_base_and_control_files_load_into_the_model(tmp_path):
    from cosmos_transfer.checkpoints.transfer1 import to_official
    from cosmos_transfer.inference import loading

    source = make_model(seed=1)
    state = source.state_dict()
    base = {k: v for k, v in state.items() if k.startswith("net.")}  # an official base file: net.* only
    torch.save(base, tmp_path / "base_model.pt")
    torch.save({"model": to_official(state).files["edge_control.pt"]}, tmp_path / "edge_control.pt")

    target = make_model(seed=2)
    keys = loading.load_weights(target, str(tmp_path / "base_model.pt"),
                                control_checkpoints={"edge": str(tmp_path / "edge_control.pt")})
    assert len(keys) == len(state)
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    with pytest.raises(ValueError, match="the model has no 'depth' branch"):
        loading.load_control_file(target, "depth", str(tmp_path / "edge_control.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        loading.load_weights(target, str(tmp_path / "missing.pt"))


# ----------------------------------------------------------------------------------------------------------------------
# No picture, no file (issue 25 item 2): NaN from the model, or a video that is one value everywhere, is refused


def _one_window(spec_files):
    inputs, text = _prepare(spec_files)
    inputs.controls = {k: v[:5] for k, v in inputs.controls.items()}
    return inputs, text


def test_nan_weights_are_refused_before_a_black_video(spec_files):
    from cosmos_transfer.inference.pipeline import GenerationError

    model = make_model()
    with torch.no_grad():
        model.net.final_layer.linear.weight[0, 0] = float("nan")  # as a file of a diverged run would give it
    inputs, text = _one_window(spec_files)
    with pytest.raises(GenerationError) as error:
        generate_video(model, inputs, text, window_frames=5, options=SamplingOptions(num_steps=1, guidance=0.0),
                       output="out.mp4")
    message = str(error.value)
    assert "out.mp4 was not written" in message and "model's output for window 1/1 holds" in message, message
    assert "NaN or inf" in message and "weights file" in message  # the likely cause


@pytest.mark.parametrize("decoded, message", [
    (float("nan"), "the tokenizer's decoding of window 1/1 holds"),
    (-1.0, r"every pixel of all 5 generated frames has the same value \(0\)"),  # all black
])
def test_a_video_that_is_no_picture_is_refused(spec_files, decoded, message):
    from cosmos_transfer.inference.pipeline import GenerationError

    model = make_model()
    model.decode = lambda latent: torch.full((1, 3, 5, 16, 16), decoded)
    inputs, text = _one_window(spec_files)
    with pytest.raises(GenerationError, match=message):
        generate_video(model, inputs, text, window_frames=5, options=SamplingOptions(num_steps=1, guidance=0.0))


def test_check_not_constant_accepts_any_picture():
    from cosmos_transfer.inference.pipeline import GenerationError, check_not_constant

    frames = np.zeros((3, 4, 4, 3), np.uint8)
    with pytest.raises(GenerationError, match="same value"):
        check_not_constant(frames, "x.mp4")
    frames[2, 3, 3, 1] = 1  # one pixel differs: a picture, however dark
    check_not_constant(frames, "x.mp4")
