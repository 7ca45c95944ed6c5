"""Experiment files. Each registers configs in Hydra group `experiment`; see cosmos_transfer/config/experiments.py and
docs/CONFIG.md. They are imported only when a run asks for one of their names (`experiment=NAME`)."""
