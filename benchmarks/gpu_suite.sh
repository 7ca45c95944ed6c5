#!/usr/bin/env bash
# The measurements that need a GPU, in one run of under 10 minutes on one GPU, written as one Markdown table.
#
#     bash benchmarks/gpu_suite.sh [OUT_DIR]          # default OUT_DIR: outputs/gpu_suite/<UTC date-time>
#     bash benchmarks/gpu_suite.sh --plan             # print the commands, run nothing (no GPU needed)
#
# Each row is an existing benchmark script run with --device cuda (or its GPU mode), under its own time limit:
#   dit_step.py        bf16 training step of our GeneralDIT vs diffusers' at the same size (7B width, 2 blocks,
#                      16 x 32 x 32 = 16,384 tokens);
#                      again with Transformer Engine attention (TE vs SDPA; where TE is not importable, that row
#                      says so)
#   dit_v2_5_step.py   the same for the Cosmos-2.5 network (2B width, 4 blocks, Reason1-wide text) vs diffusers' 2.5
#                      configuration
#   ctrl_memory.py     peak GPU memory of one 7B control post-training step at 121 frames 1280 x 704, activation
#                      checkpointing "full" (the experiments' choice); then the Transfer2.5-2B control step
#                      (93 frames 1280 x 704) the same way
#   tokenizer.py       the tokenizers' encode + decode speed (ours vs diffusers) on the GPU
# MFU = the model's FLOPs (cosmos_transfer/flops.py) / median step time / the GPU's bf16 peak, by gpu_suite_table.py,
# which also writes the summary table (OUT_DIR/summary.md) from the logs. A step that fails or runs out of time is a
# row saying so; its log is beside it. Without a CUDA GPU the suite stops at once with exit status 2.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

# name | time limit (s) | command (run from the repository root)
STEPS=(
  "dit_sdpa|110|benchmarks/dit_step.py --device cuda --blocks 2 --channels 4096 --heads 32 --frames 16 --size 64 --repeats 5 --no-memory"
  "dit_te|80|benchmarks/dit_step.py --device cuda --blocks 2 --channels 4096 --heads 32 --frames 16 --size 64 --repeats 5 --no-memory --attention-backend te"
  "dit_v2_5|100|benchmarks/dit_v2_5_step.py --device cuda --blocks 4 --channels 2048 --heads 16 --frames 16 --size 64 --repeats 5 --no-memory"
  "memory_7b|120|benchmarks/ctrl_memory.py --measure"
  "memory_transfer2p5_2b|85|benchmarks/ctrl_memory.py --measure --size transfer2p5_2b"
  "tokenizer|40|benchmarks/tokenizer.py --device cuda --quick"
)

if [ "${1:-}" = "--plan" ]; then
  for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit command <<<"$step"
    echo "$name (limit ${limit} s): $command"
  done
  exit 0
fi

# Fail fast and clearly without a GPU: the suite measures nothing a CPU could stand in for. The driver's tool and
# CUDA_VISIBLE_DEVICES answer in milliseconds; torch (seconds to import) has the last word.
no_gpu() {
  echo "gpu_suite.sh: no CUDA GPU is visible ($1): these measurements need one GPU (bf16 step time and MFU, peak" \
       "GPU memory, tokenizer speed, TE vs SDPA). Run it on a GPU machine; the CPU figures are in BENCHMARKS.md." >&2
  exit 2
}
case "${CUDA_VISIBLE_DEVICES-unset}" in
  "" | "-1") no_gpu "CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES}'" ;;
esac
nvidia-smi -L >/dev/null 2>&1 || no_gpu "nvidia-smi is missing or lists no GPU"
"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
  || no_gpu "torch.cuda.is_available() is False for $PYTHON"

OUT="${1:-$ROOT/outputs/gpu_suite/$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"  # absolute: the steps run from the repository root
cd "$ROOT" || exit 2
"$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(), "| torch", torch.__version__)' >"$OUT/device.txt"
: >"$OUT/steps.tsv"
for step in "${STEPS[@]}"; do
  IFS='|' read -r name limit command <<<"$step"
  echo "[gpu_suite] $name (at most ${limit} s): $command" >&2
  start=$(date +%s%N)
  # shellcheck disable=SC2086  # the command is a word list on purpose
  timeout --kill-after=10 "$limit" "$PYTHON" $command >"$OUT/$name.log" 2>&1
  status=$?
  milliseconds=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$milliseconds" "$command" >>"$OUT/steps.tsv"
done
"$PYTHON" benchmarks/gpu_suite_table.py "$OUT" | tee "$OUT/summary.md"
