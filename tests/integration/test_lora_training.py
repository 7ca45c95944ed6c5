"""LoRA through peft (cosmos_transfer/lora.py) on both families: it trains, a merged copy computes what the adapted
model computes, the trainer resumes a LoRA run bitwise under FSDP2 on 2 gloo ranks, and export writes the merged and
the separate forms, which load back for inference. Memory accounting counts the adapters.

peft's import alone takes ~10-40 s here (it imports transformers), hence one module of few, fuller tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

import configs.net as configs_net
from configs.train import make_config
from cosmos_transfer import lora
from cosmos_transfer.config.compose import override
from cosmos_transfer.config.lazy import instantiate
from tests.helpers import ROOT, control_batch
from tests.tiny_datasets import make_tiny_dataset

pytest.importorskip("peft", reason="LoRA needs peft (the `lora` / `dev` extra)")

LORA_OVERRIDES = ["lora.rank=4", "lora.alpha=8"]


def _ctrl_tiny(*overrides: str) -> tuple[nn.Module, lora.LoRA | None]:
    config = override(make_config(), ["--", "experiment=ctrl_tiny", *overrides])
    torch.manual_seed(0)
    model = instantiate(config.model)
    adapters = instantiate(config.lora) if config.lora else None
    if adapters is not None:
        adapters.apply(model)
    return model, adapters


def _train(parameters, loss_fn, steps: int = 12) -> list[float]:
    optimizer = torch.optim.AdamW(parameters, lr=2e-3)
    losses = []
    for _ in range(steps):
        torch.manual_seed(1)  # the same noise and noise level every step: the loss of one fixed problem
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def _untrained_adapters(model: nn.Module) -> list[str]:
    """Adapted layers whose B is still zero after training: their adapter never got a gradient (a network that
    applies a layer's weight itself, bypassing the module peft wrapped, leaves them so)."""
    full = {n: p.full_tensor() if hasattr(p, "full_tensor") else p for n, p in model.named_parameters()}  # FSDP2
    return [n for n, p in full.items() if ".lora_B." in n and not bool(p.detach().abs().sum() > 0)]


@pytest.mark.slow
@pytest.mark.parametrize("option", ["control", "base"])
def test_transfer1_lora_trains_and_the_merged_model_samples_the_same(option):
    model, adapters = _ctrl_tiny(f"lora={option}", *LORA_OVERRIDES)
    trainable = model.trainable_parameters()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if lora.is_adapter_key(n))
    assert not any(".base_layer." in n for n in names)  # the adapted layers' own weights are frozen
    if option == "control":  # the branch's zero-initialized layers must learn for the adapters to get gradients
        assert {n.split(".")[2] for n in names if n.startswith("net_ctrl.edge.") and not lora.is_adapter_key(n)} \
            == {"x_embedder2", "input_hint_block", "zero_blocks"}
    else:
        assert all(n.startswith("net.blocks.") for n in names if lora.is_adapter_key(n))
    batch = control_batch()
    losses = _train(trainable, lambda: model.training_step(dict(batch))[0])
    assert losses[-1] < 0.97 * losses[0], losses
    assert not _untrained_adapters(model)  # every adapter moved (B starts at zero), the MLP's layer2 included

    plain, _ = _ctrl_tiny()
    plain.load_state_dict(lora.merge_weights(model.state_dict(), adapters.scaling), strict=True)
    model.eval(), plain.eval()
    with torch.no_grad():
        adapted = model.generate_samples(dict(batch), num_steps=2, guidance=0.0, seed=3)
        merged = plain.generate_samples(dict(batch), num_steps=2, guidance=0.0, seed=3)
        base, _ = _ctrl_tiny()
        base.load_state_dict(lora.split_weights(model.state_dict())[0], strict=True)  # the same, adapters left out
        without = base.eval().generate_samples(dict(batch), num_steps=2, guidance=0.0, seed=3)
    error = float((adapted - merged).abs().max())
    assert error < 1e-4 * float(adapted.abs().max()), error
    assert float((adapted - without).abs().max()) > 100 * error  # the adapters change what the model computes


class _Holder(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net


@pytest.mark.slow
@pytest.mark.parametrize("option", ["base", "control"])
def test_cosmos2p5_lora_trains_and_merges(option):
    """The 2.5 names (q_proj ... output_proj, mlp.layer1/2): the Predict2.5 base, or Transfer2.5's control blocks."""
    net_config = configs_net.TINY_DIT_2P5 if option == "base" else configs_net.TINY_TRANSFER_2P5
    settings = dict(target_modules=lora.BASE_TARGETS) if option == "base" else \
        dict(target_modules=lora.CONTROL_TARGETS, trainable=lora.CONTROL_TRAINABLE)
    adapters = lora.LoRA(rank=4, alpha=8, **settings)
    torch.manual_seed(0)
    model = _Holder(instantiate(net_config))
    plain = _Holder(instantiate(net_config))
    plain.load_state_dict(model.state_dict())
    adapters.apply(model)
    g = torch.Generator().manual_seed(0)
    x, t, text = torch.randn(1, 16, 2, 16, 16, generator=g), torch.rand(1, generator=g) * 1000, torch.randn(1, 5, 1024)
    inputs = (x, t, text) if option == "base" else (x, t, text, torch.randn(1, 16, 2, 16, 16, generator=g))
    target = torch.randn(x.shape, generator=g)
    losses = _train([p for p in model.parameters() if p.requires_grad],
                    lambda: (model.net(*inputs) - target).pow(2).mean())
    assert losses[-1] < 0.97 * losses[0], losses
    assert not _untrained_adapters(model)
    plain.load_state_dict(lora.merge_weights(model.state_dict(), adapters.scaling), strict=True)
    with torch.no_grad():
        adapted, merged = model.net(*inputs), plain.net(*inputs)
    assert torch.allclose(adapted, merged, rtol=1e-4, atol=1e-5), float((adapted - merged).abs().max())


def test_memory_accounting_counts_the_adapters():
    from cosmos_transfer.memory import model_memory, model_memory_from_config

    config = override(make_config(), ["--", "experiment=ctrl_tiny", "lora=control", *LORA_OVERRIDES])
    report = model_memory_from_config(config.model, lora=config.lora)
    model, _ = _ctrl_tiny("lora=control", *LORA_OVERRIDES)
    adapters = sum(p.numel() for n, p in model.named_parameters() if lora.is_adapter_key(n))
    kept = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not lora.is_adapter_key(n))
    assert adapters > 0 and report.trainable_parameters == adapters + kept
    assert report == model_memory(model)  # the meta-device count is the built model's
    full = model_memory_from_config(config.model)
    assert report.trainable_parameters < full.trainable_parameters / 4
    assert report.frozen_parameters + report.trainable_parameters == full.frozen_parameters \
        + full.trainable_parameters + adapters


# ----------------------------------------------------------------------------------------------------------------------
# Through the trainer: FSDP2 on 2 gloo ranks, resume, export


def _train_command(data, job_name: str, max_iter: int) -> list[str]:
    overrides = [
        "experiment=ctrl_tiny", "lora=control", *LORA_OVERRIDES, f"job.name={job_name}",
        f"dataloader_train.dataset.root={data}", "dataloader_train.dataset.text_embedding_folder=t5_xxl",
        "dataloader_train.dataset.num_frames=5", f"dataloader_val.dataset.root={data}",
        "dataloader_val.dataset.text_embedding_folder=t5_xxl", "dataloader_val.dataset.num_frames=5",
        f"trainer.max_iter={max_iter}", "trainer.logging_iter=1", "trainer.validation_iter=0",
        "trainer.progress_bar=false", "checkpoint.save_iter=2", "optimizer.lr=1e-3",
    ]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(ROOT / "scripts" / "train.py"), "--config=configs/train.py", "--", *overrides]


def _run(command, env) -> None:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def _losses(job) -> dict[int, float]:
    lines = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    return {m["iteration"]: m["loss"] for m in lines if "loss" in m and "event" not in m}


@pytest.mark.slow
def test_lora_run_resumes_bitwise_under_fsdp2_and_exports(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", stems=("a", "b"), num_frames=5, size=(32, 32), text_dim=384)
    env = {**os.environ, "OUTPUT_ROOT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    jobs = tmp_path / "out" / "cosmos_transfer" / "ctrl_tiny"
    _run(_train_command(data, "whole", 4), env)  # 4 iterations, checkpoints at 2 and 4
    whole = jobs / "whole"
    # The interrupted run: a job holding the whole run's checkpoint of iteration 2, continued to 4.
    part = jobs / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(whole / "checkpoints" / "iter_000000002", part / "checkpoints" / "iter_000000002")
    (part / "checkpoints" / "latest_checkpoint.txt").write_text("iter_000000002\n")
    _run(_train_command(data, "part", 4), env)
    whole_losses, part_losses = _losses(whole), _losses(part)
    assert sorted(part_losses) == [3, 4]
    assert [part_losses[i] for i in (3, 4)] == [whole_losses[i] for i in (3, 4)]  # bitwise

    checkpoint = whole / "checkpoints" / "iter_000000004"
    import torch.distributed.checkpoint as dcp

    keys = list(dcp.FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata)
    optimized = {k for k in keys if k.startswith("optimizer.state.")}
    assert any(".lora_A." in k for k in optimized) and not any(".base_layer." in k for k in optimized)
    assert not any(k.startswith("optimizer.state.net.") for k in optimized)  # nothing of the frozen base

    sys.path.insert(0, str(ROOT / "scripts"))
    import export_checkpoint

    merged_file, separate_file = str(tmp_path / "merged.safetensors"), str(tmp_path / "separate.safetensors")
    export_checkpoint.main([str(checkpoint), "--out", merged_file])
    assert export_checkpoint.main([str(checkpoint), "--out", separate_file, "--lora", "separate"]) == 0
    adapter_file = export_checkpoint.adapter_path(separate_file)
    adapter_weights, settings = lora.read_adapters(adapter_file)
    assert (settings["rank"], settings["alpha"]) == (4, 8.0) and all(lora.is_adapter_key(k) for k in adapter_weights)

    # The adapted model as trained (its DCP weights), against the two exports loaded for inference.
    from cosmos_transfer.trainer.checkpoint import load_model_weights

    trained, _ = _ctrl_tiny("lora=control", *LORA_OVERRIDES)
    trained.load_state_dict(export_checkpoint.read_weights(str(checkpoint)), strict=True)
    from_merged, _ = _ctrl_tiny()
    load_model_weights(from_merged, merged_file)
    from_separate, _ = _ctrl_tiny()
    load_model_weights(from_separate, separate_file)
    lora.merge_adapter_file(from_separate, adapter_file)
    batch = control_batch(frames=5)
    with torch.no_grad():
        outputs = [m.eval().generate_samples(dict(batch), num_steps=2, guidance=0.0, seed=3)
                   for m in (trained, from_merged, from_separate)]
    for output in outputs[1:]:
        assert torch.allclose(outputs[0], output, rtol=1e-4, atol=1e-5), float((outputs[0] - output).abs().max())

    # A base file meets the adapted model under base names; a DCP folder with adapters is not a load path.
    fresh, _ = _ctrl_tiny("lora=control", *LORA_OVERRIDES)
    loaded = load_model_weights(fresh, merged_file, strict=False)
    assert loaded and not any(lora.is_adapter_key(k) for k in loaded)
    with pytest.raises(ValueError, match="holds LoRA adapters"):
        load_model_weights(fresh, str(checkpoint))


def test_lora_on_a_frozen_bf16_base_shards_and_trains(tmp_path):
    """The 7B recipe's frozen base is stored in bf16; its adapters are fp32 in the same FSDP2 units (one gloo rank)."""
    import torch.distributed as dist

    from cosmos_transfer.trainer.parallelize import parallelize

    model, _ = _ctrl_tiny("+model.base_dtype=bfloat16", "lora=base", *LORA_OVERRIDES)
    assert {p.dtype for n, p in model.net.named_parameters() if ".base_layer." in n} == {torch.bfloat16}
    assert {p.dtype for n, p in model.named_parameters() if lora.is_adapter_key(n)} == {torch.float32}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        parallelize(model, device=torch.device("cpu"), param_dtype=torch.float32, reduce_dtype=torch.float32)
        losses = _train(model.trainable_parameters(), lambda: model.training_step(dict(control_batch()))[0], steps=4)
    finally:
        dist.destroy_process_group()
    assert losses[-1] < losses[0], losses
    assert not _untrained_adapters(model)


@pytest.mark.parametrize("option", ["base", "control"])
def test_lora_on_the_transfer2p5_training_model_freezes_what_it_says(option):
    """Transfer2.5 keeps base and control blocks in one network (`net`): adapters on the base leave the control branch
    training in full (as Transfer1's separate net_ctrl); adapters on the control blocks leave only their own layers."""
    config = override(make_config(), ["--", "experiment=transfer2p5_tiny", f"lora={option}", *LORA_OVERRIDES])
    torch.manual_seed(0)
    model = instantiate(config.model)
    before = {n for n, p in model.named_parameters() if p.requires_grad}
    instantiate(config.lora).apply(model)
    after = {lora.base_name(n) for n, p in model.named_parameters() if p.requires_grad and not lora.is_adapter_key(n)}
    adapters = [n for n, p in model.named_parameters() if lora.is_adapter_key(n)]
    assert adapters and all(p.requires_grad for n, p in model.named_parameters() if lora.is_adapter_key(n))
    if option == "base":
        assert all(n.startswith("net.blocks.") for n in adapters)
        assert after == before  # the control branch, all of it, as before
    else:
        assert all(n.startswith("net.control_blocks") for n in adapters)
        assert after and after < before
        assert all(n.startswith("net.control_embedder") or n.rsplit(".", 2)[-2] in ("before_proj", "after_proj")
                   for n in after), sorted(after)


@pytest.mark.slow
def test_cosmos2p5_lora_run_resumes_bitwise_and_exports(tmp_path):
    """The same through the trainer for the 2.5 family: a Transfer2.5 control model with LoRA on its branch, 2 gloo
    ranks under FSDP2, resumed from the checkpoint of iteration 2 with the uninterrupted run's losses (bitwise), then
    exported merged into a file a model without adapters loads strictly."""
    data = make_tiny_dataset(tmp_path / "data", stems=("a", "b", "c", "d"), num_frames=9, size=(32, 32),
                             text_dim=384)  # 2 ranks x the experiment's batch 2
    env = {**os.environ, "OUTPUT_ROOT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    data_options = [f"dataset.root={data}", "dataset.text_embedding_folder=t5_xxl", "dataset.num_frames=9",
                    "dataset.text_embedding_length=16"]

    def command(job_name: str) -> list[str]:
        overrides = ["experiment=transfer2p5_tiny", "lora=control", *LORA_OVERRIDES, f"job.name={job_name}",
                     *[f"dataloader_train.{o}" for o in data_options], *[f"dataloader_val.{o}" for o in data_options],
                     "trainer.max_iter=4", "trainer.logging_iter=1", "trainer.validation_iter=0",
                     "trainer.progress_bar=false", "checkpoint.save_iter=2"]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                str(ROOT / "scripts" / "train.py"), "--config=configs/train.py", "--", *overrides]

    jobs = tmp_path / "out" / "cosmos_transfer" / "transfer2p5_tiny"
    _run(command("whole"), env)
    whole, part = jobs / "whole", jobs / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(whole / "checkpoints" / "iter_000000002", part / "checkpoints" / "iter_000000002")
    (part / "checkpoints" / "latest_checkpoint.txt").write_text("iter_000000002\n")
    _run(command("part"), env)
    whole_losses, part_losses = _losses(whole), _losses(part)
    assert sorted(part_losses) == [3, 4]
    assert [part_losses[i] for i in (3, 4)] == [whole_losses[i] for i in (3, 4)]  # bitwise
    import torch.distributed.checkpoint as dcp

    keys = dcp.FileSystemReader(str(whole / "checkpoints" / "iter_000000004")).read_metadata().state_dict_metadata
    assert any(k.startswith("optimizer.state.") and ".lora_A." in k for k in keys)  # the adapters were trained

    sys.path.insert(0, str(ROOT / "scripts"))
    import export_checkpoint

    from cosmos_transfer.trainer.checkpoint import load_model_weights

    merged_file = str(tmp_path / "merged.safetensors")
    assert export_checkpoint.main([str(whole / "checkpoints" / "iter_000000004"), "--out", merged_file]) == 0
    plain = instantiate(override(make_config(), ["--", "experiment=transfer2p5_tiny"]).model)
    loaded = load_model_weights(plain, merged_file)
    assert loaded and not any(lora.is_adapter_key(k) for k in loaded)
