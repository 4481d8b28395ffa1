"""User-facing errors: shown as one clear message (no traceback unless HYDRA_FULL_ERROR=1)."""


class UserError(Exception):
    """A mistake in the user's input (config, corpus, file); the message says what and where."""


class ConfigError(UserError):
    """An invalid configuration: unknown key, wrong type, incompatible choices, missing values."""


class DataError(UserError):
    """A corpus that cannot be used: missing, empty, too short, not UTF-8."""


class PositionRangeError(UserError):
    """A positional encoding asked for a position it cannot represent."""
