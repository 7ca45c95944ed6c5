"""The tiny Cosmos-2.5 demo (experiment transfer2p5_tiny: Cosmos25Model on a Cosmos25ControlDiT, frozen base,
rectified flow) through the real trainer under torchrun (2 processes, gloo, FSDP2 with the control blocks as their
own units): the loss falls, a resumed run (with activation checkpointing) repeats the uninterrupted losses bitwise,
the checkpoint holds optimizer and EMA state for the control branch only, and scripts/inference.py generates a video
from the job."""

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
import torch
import torch.distributed.checkpoint as dcp

from tests.helpers import ROOT, check, losses, subprocess_env
from tests.tiny_datasets import make_tiny_dataset

pytestmark = pytest.mark.slow

JOB = ("cosmos_transfer", "transfer2p5_tiny", "transfer2p5_tiny")
ITERATIONS, SAVE_AT = 24, 12


def _overrides(data) -> list[str]:
    data_options = [f"dataset.root={data}", "dataset.text_embedding_folder=t5_xxl", "dataset.num_frames=9",
                    "dataset.text_embedding_length=16"]
    return ["experiment=transfer2p5_tiny",
            *[f"dataloader_train.{o}" for o in data_options], *[f"dataloader_val.{o}" for o in data_options],
            f"trainer.max_iter={ITERATIONS}", "trainer.logging_iter=1", f"trainer.validation_iter={ITERATIONS}",
            "trainer.sample_num_steps=3", "trainer.progress_bar=false", f"checkpoint.save_iter={SAVE_AT}"]


def _train(output_root, data, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "scripts" / "train.py"), "--config=configs/train.py", "--", *_overrides(data), *extra]
    env = {**subprocess_env(), "OUTPUT_ROOT": str(output_root)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfer2p5_tiny")
    data = make_tiny_dataset(tmp / "data", stems=("a", "b", "c", "d"), num_frames=9, size=(32, 32), text_dim=384)
    check(_train(tmp / "out", data))
    job = tmp.joinpath("out", *JOB)
    # The same job stopped at its first checkpoint: the later checkpoint and its metrics taken away, then resumed.
    shutil.copytree(tmp / "out", tmp / "resumed")
    resumed = tmp.joinpath("resumed", *JOB)
    shutil.rmtree(resumed / "checkpoints" / f"iter_{ITERATIONS:09d}")
    (resumed / "checkpoints" / "latest_checkpoint.txt").write_text(f"iter_{SAVE_AT:09d}\n")
    lines = (resumed / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    kept = [line for line, m in zip(lines, records) if m.get("iteration", 0) <= SAVE_AT and "event" not in m]
    (resumed / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    shutil.rmtree(resumed / "samples", ignore_errors=True)
    # Resumed with activation checkpointing on every block, control blocks included: it recomputes the same numbers.
    result = check(_train(tmp / "resumed", data, "trainer.activation_checkpointing=full"))
    return {"job": job, "resumed": resumed, "resume_output": result.stdout + result.stderr, "tmp": tmp}


def test_the_loss_falls(runs):
    loss = losses(runs["job"])
    assert sorted(loss) == list(range(1, ITERATIONS + 1))
    first, last = [loss[i] for i in range(1, 5)], [loss[i] for i in range(ITERATIONS - 3, ITERATIONS + 1)]
    assert sum(last) < 0.75 * sum(first), loss


def test_resume_repeats_the_uninterrupted_losses_bitwise(runs):
    assert "resumed from" in runs["resume_output"]
    reference, resumed = losses(runs["job"]), losses(runs["resumed"])
    assert {i: resumed[i] for i in range(SAVE_AT + 1, ITERATIONS + 1)} == \
        {i: reference[i] for i in range(SAVE_AT + 1, ITERATIONS + 1)}


def test_only_the_control_branch_has_optimizer_and_ema_state(runs):
    checkpoint = runs["job"] / "checkpoints" / f"iter_{ITERATIONS:09d}"
    keys = list(dcp.FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata)
    assert any(k.startswith("model.net.blocks.0.self_attn.") for k in keys)  # the frozen base is in the weights
    optimized = {k.split(".")[3] for k in keys if k.startswith("optimizer.state.net.")}
    assert optimized == {"control_embedder", "control_blocks"}, optimized
    shadowed = {k.split(".")[3] for k in keys if k.startswith("ema.shadow.net.")}
    assert shadowed <= {"control_embedder", "control_blocks"} and shadowed, shadowed
    assert (runs["job"] / "samples" / f"iter_{ITERATIONS:09d}.mp4").is_file()  # validation sampled (UniPC)


def test_inference_generates_a_video_from_the_job(runs):
    from cosmos_transfer.data.text_embeddings import save_text_embedding
    from cosmos_transfer.video_io import read_video

    spec_module = importlib.util.spec_from_file_location("inference_script", ROOT / "scripts" / "inference.py")
    inference = importlib.util.module_from_spec(spec_module)
    spec_module.loader.exec_module(inference)
    tmp = runs["tmp"]
    embedding = str(tmp / "prompt.safetensors")
    import numpy as np

    save_text_embedding(embedding, np.random.default_rng(0).standard_normal((5, 384)).astype(np.float32),
                        encoder="random", max_length=16, caption="a red square")
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"prompt_embedding": embedding, "input_video_path": str(tmp / "data/videos/a.mp4"),
                                "edge": {"control_weight": 1.0}}))
    out = str(tmp / "generated.mp4")
    code = inference.main(["--experiment", "transfer2p5_tiny", "--spec", str(spec), "--out", out,
                           "--checkpoint", str(runs["job"]), "--num_steps", "3", "--guidance", "1.5",
                           "--window_frames", "9", "--text_length", "16", "--resolution", "32x32"])
    assert code == 0
    frames = read_video(out)[0]
    assert frames.shape[0] == 9 and frames.shape[1:3] == (32, 32)
    settings = json.loads(open(out[:-4] + ".json").read())
    assert settings["sampler"] is None and settings["guidance"] == 1.5  # the model's default: UniPC


def test_inference_encodes_a_prompt_with_a_reason1_folder(tmp_path):
    """scripts/inference.py's --text_encoder takes a Cosmos-Reason1 folder for the 2.5 models (a tiny random
    Qwen2.5-VL here): the prompt is embedded as prepare_dataset.py embeds captions, all 16 positions."""
    from cosmos_transfer.data.text_encoders import load_text_encoder
    from cosmos_transfer.inference.pipeline import encode_text
    from cosmos_transfer.inference.spec import load_spec
    from tests.tiny_datasets import make_tiny_reason1

    folder = make_tiny_reason1(tmp_path / "reason1", num_layers=2, hidden_size=32)
    spec_path = tmp_path / "spec.json"
    video = make_tiny_dataset(tmp_path / "data", stems=("a",), num_frames=3) + "/videos/a.mp4"
    spec_path.write_text(json.dumps({"prompt": "a red square moves right", "input_video_path": video, "edge": {}}))
    text = encode_text(load_spec(str(spec_path)), length=16, text_encoder=folder)
    expected = load_text_encoder(folder, max_length=16).encode(["a red square moves right"])[0].float()
    assert text.embeddings.shape == (16, 64)
    assert torch.equal(text.embeddings, expected)


def test_post_training_from_an_official_layout_file_under_torchrun(tmp_path):
    """checkpoint.load_path = a file in NVIDIA's released 2.5 layout (net.*, bf16, with a training counter): the
    trainer builds on the meta device, each rank reads its shards, trains, and the job's weights hold the file's
    frozen base unchanged. (Before: the model's condition-frame table was built on the meta device and the first
    step failed with "Cannot copy out of meta tensor".)"""
    from configs.train import make_config
    from cosmos_transfer.config.lazy import instantiate
    from cosmos_transfer.inference import loading

    config = loading.compose_config("transfer2p5_tiny", make_config=make_config)
    torch.manual_seed(5)
    source = instantiate(config.model)
    official = {"net." + k: v.to(torch.bfloat16) for k, v in source.net.state_dict().items()}
    official["net.accum_iteration"] = torch.tensor(3)
    torch.save(official, tmp_path / "model_ema_bf16.pt")
    data = make_tiny_dataset(tmp_path / "data", stems=("a", "b", "c", "d"), num_frames=9, size=(32, 32),
                             text_dim=384)
    check(_train(tmp_path / "out", data, f"checkpoint.load_path={tmp_path / 'model_ema_bf16.pt'}",
                 "trainer.max_iter=2", "trainer.validation_iter=0", "checkpoint.save_iter=2"))
    model = loading.build_model(config)
    loading.load_weights(model, str(tmp_path.joinpath("out", *JOB)), use_ema=False)
    state = model.state_dict()
    for key in ("net.blocks.1.cross_attn.k_proj.weight", "net.crossattn_proj.0.weight",
                "net.final_layer.linear.weight"):
        assert torch.equal(state[key], official[key].float()), key
    assert not torch.equal(state["net.control_blocks.0.after_proj.weight"],
                           official["net.control_blocks.0.after_proj.weight"].float())  # the branch trained
