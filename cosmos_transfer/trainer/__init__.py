"""The trainer: `train(config)` runs a composed config under torchrun (or plain python as one process).

    trainer.py      the loop: build (model -> FSDP2 -> optimizer, scheduler, EMA, data), resume, step, validate, save
    parallelize.py  FSDP2 per transformer block then per network, activation checkpointing, torch.compile; from outside
    checkpoint.py   DCP checkpoints (iter_N/ + latest_checkpoint.txt, atomic), RNG/data/scheduler state, load_path
    schedulers.py   lambda_linear (Cosmos' linear warm-up) and constant
    logging.py      metrics.jsonl, TensorBoard, optional W&B, progress bar, MFU peak table
    callbacks.py    hook points for extra behaviour (trainer.callbacks)
    distributed.py  process group set-up (NCCL on CUDA, gloo on CPU) and small collectives
    signals.py      SIGTERM/SIGUSR1 -> save at the next step boundary and exit 0; data-loader workers ignore them
    job_lock.py     one run per job folder: rank 0 holds an flock on <job dir>/job.lock

Job folder `$OUTPUT_ROOT/{project}/{group}/{name}`: job.lock, config.yaml, metrics.jsonl, tensorboard/, samples/,
checkpoints/iter_{N:09d}/, checkpoints/latest_checkpoint.txt. Rerunning the same command resumes; on CPU with the same
world size the losses that follow are bitwise those of an uninterrupted run. scripts/export_checkpoint.py turns a
checkpoint into one safetensors file, which `checkpoint.load_path` reads back.
"""
