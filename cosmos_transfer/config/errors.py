"""The project's user-error base and the config's error types. Each message is one paragraph: the thing that is
wrong, what was expected, how to fix it.

    UserError             the base of every error caused by what a user gave (a config, a file, a spec, a setting):
                          every script prints its message as one paragraph and exits 2 (cosmos_transfer/cli.py
                          `run_script`); anything else is a bug and keeps its traceback
    ConfigError           a bad config input: unknown key, wrong type, unknown group option, bad --config file
    ExperimentError       an unknown experiment, duplicate names, an unreadable or failing experiment file
    FrozenConfigError     code changed a config after it was frozen for training
    InstantiationError    a LazyDict could not be built (names the config path and the target)

Errors of other layers derive from UserError too (CheckpointError, WeightsFileError, SpecError, DataError, ...), so
that one `except UserError` in each script's boundary covers them all.
"""

__all__ = ["UserError", "DataError", "ConfigError", "ExperimentError", "FrozenConfigError", "InstantiationError"]


class UserError(Exception):
    """Bad input from the user; the message is one paragraph naming the thing and what was expected.

    `exit_code` is the script's exit status for it (2: bad input)."""

    exit_code = 2


class DataError(UserError, ValueError):
    """A dataset, clip, caption, bucket list or embedding folder that cannot be used as given; the message names it."""


class ConfigError(UserError, ValueError):
    """A bad config input (unknown key, wrong type, unknown experiment, ...); the message says what and how to fix."""


class ExperimentError(ConfigError):
    """Unknown experiment, duplicate names, unreadable or failing experiment file; the message says which and where."""


class FrozenConfigError(AttributeError):
    """Raised when code changes a config after it was frozen for training."""


class InstantiationError(UserError, RuntimeError):
    """A LazyDict could not be turned into an object; the message names the config path and the target."""
