"""User-facing errors, and the one way a command-line tool reports them: one clear line, exit status 1.

No traceback unless ``HYDRA_FULL_ERROR=1`` (``decoderlab-train``) asks for one.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.text import Text


class UserError(Exception):
    """A mistake in the user's input (config, corpus, file); the message says what and where."""


class ConfigError(UserError):
    """An invalid configuration: unknown key, wrong type, incompatible choices, missing values."""


class DataError(UserError):
    """A corpus that cannot be used: missing, empty, too short, not UTF-8."""


class StopWithMessage(BaseException):
    """An error that must pass Hydra's own handlers, which catch ``Exception`` (a callback's becomes a warning, a
    job's a traceback), to reach ``decoderlab-train``'s main: printed as one line, exit status 1."""


class RefusedConfig(StopWithMessage):
    """A composed configuration refused inside Hydra before it saves it (a literal secret in a YAML file)."""


class JobFailed(StopWithMessage):
    """A sweep job under an in-process launcher (``hydra/launcher=basic``) failed on a user mistake: Hydra's basic
    sweeper stops there, naming the job's overrides; this says why."""


class PositionRangeError(UserError):
    """A positional encoding asked for a position it cannot represent."""


def print_user_error(e: BaseException) -> None:
    """``error: <message>`` on stderr, the word in bold red."""
    # soft_wrap: the terminal wraps; a path in the message must stay one string (copyable, greppable).
    Console(stderr=True, soft_wrap=True).print(Text("error: ", style="bold red") + Text(str(e)))


@contextlib.contextmanager
def exit_on_user_error(code: int = 1) -> Iterator[None]:
    """In a command-line tool's main: a :class:`UserError` becomes :func:`print_user_error` and exit ``code``."""
    try:
        yield
    except UserError as e:
        print_user_error(e)
        sys.exit(code)
