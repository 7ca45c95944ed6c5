"""The training config, in layers; each module imports only the ones above it in this list:

    errors.py        the one-paragraph error types (ConfigError, ExperimentError, FrozenConfigError, InstantiationError)
    lazy.py          LazyCall (L), LazyDict, instantiate, PLACEHOLDER: describe a call now, make it later
    schema.py        the attrs sections (job, trainer, checkpoint), Config and the Hydra defaults list
    experiments.py   the experiment index: names read from experiment files with `ast`, one file imported per run
    compose.py       override (Hydra composition, error translation), freeze, to_yaml / from_yaml, load_make_config

Import names from the module that defines them, e.g. `from cosmos_transfer.config.compose import override`; this
package file imports nothing, so loading one layer costs only that layer. See docs/CONFIG.md.
"""
