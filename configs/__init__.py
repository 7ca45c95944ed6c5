"""Config entry (`train.py: make_config()`) and option groups, one file per group, each with `register()`."""
