"""The demo tokenizer's latent statistics, shared by the demo experiments of both families (experiments/demo.py,
experiments/demo_2p5.py). A helper, not an experiment file (its name starts with `_`): importing it registers nothing.
"""

# The DCT tokenizer's per-channel latent statistics (the `latent_mean` / `latent_std` that standardize each channel),
# measured once on the 512 pretraining clips (17-frame windows at 32 x 32) by `scripts/pretrain_demo_base.py
# --latent-stats` (cosmos_transfer.tokenizers.dct.channel_stats), as Cosmos ships mean_std.pt beside its tokenizer.
# Channel order per colour: (time, row, column) frequencies 000 (the patch mean), 001, 010, 011, 100, 101, 110, 111.
# At one common scale the 21 gradient channels were 4-30x smaller than the patch means, and the EDM loss (one
# sigma_data for all channels) left them, the shapes' outlines, unlearned (BENCHMARKS.md, issue 17).
_LATENT_MEAN = [-0.4579, 0.0013, 0.0004, 0.0, 0.0, -0.0002, 0.0, 0.0,
                -0.4597, 0.0016, 0.0005, 0.0, 0.0, 0.0, 0.0001, 0.0,
                -0.5551, 0.0011, 0.0005, 0.0, -0.0001, -0.0001, 0.0, 0.0]
_LATENT_STD = [0.5814, 0.1516, 0.1493, 0.06079, 0.06345, 0.04173, 0.04218, 0.02555,
               0.4646, 0.1205, 0.1177, 0.04909, 0.04947, 0.03233, 0.03297, 0.02039,
               0.5812, 0.1358, 0.1306, 0.05443, 0.05561, 0.03721, 0.03627, 0.02295]
