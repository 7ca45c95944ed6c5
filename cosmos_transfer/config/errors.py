"""The config's error types. Each message is one paragraph: the thing that is wrong, what was expected, how to fix it.

    ConfigError           a bad config input: unknown key, wrong type, unknown group option, bad --config file
    ExperimentError       an unknown experiment, duplicate names, an unreadable or failing experiment file
    FrozenConfigError     code changed a config after it was frozen for training
    InstantiationError    a LazyDict could not be built (names the config path and the target)

scripts/train.py turns ConfigError (and so ExperimentError) into that paragraph and exit status 2.
"""

__all__ = ["ConfigError", "ExperimentError", "FrozenConfigError", "InstantiationError"]


class ConfigError(ValueError):
    """A bad config input (unknown key, wrong type, unknown experiment, ...); the message says what and how to fix."""


class ExperimentError(ConfigError):
    """Unknown experiment, duplicate names, unreadable or failing experiment file; the message says which and where."""


class FrozenConfigError(AttributeError):
    """Raised when code changes a config after it was frozen for training."""


class InstantiationError(RuntimeError):
    """A LazyDict could not be turned into an object; the message names the config path and the target."""
