"""Errors caused by the user's input: the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """Bad input (a setting, a file, a dataset) that the user can fix."""


class ConfigError(UserError):
    """A setting is missing, mistyped or out of range."""


class DataError(UserError):
    """A dataset or file is missing, mis-laid or unreadable."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or from another stage."""


class TrainingError(UserError):
    """Training went wrong in a way settings can fix (a NaN/Inf loss)."""
