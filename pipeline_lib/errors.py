"""Error types every layer may raise (the ground floor: imports nothing of the package).

The CLI turns each of these into one line on stderr and a non-zero exit; a Python traceback
reaching a user means a bug, not bad input.
"""

from __future__ import annotations

import re

# An error quotes the value it complains about, but one line, of bounded length: a 5,000
# character string or a key with a newline must not flood (or split) the message.
_LONG_WORD = re.compile(r"(\S{60})\S{20,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(message: str) -> str:
    """`message` with control characters escaped and over-long words cut."""
    message = _CONTROL.sub(lambda m: repr(m.group())[1:-1], message)
    return _LONG_WORD.sub(lambda m: f"{m.group(1)}...({len(m.group())} characters)", message)


class PipelineError(Exception):
    """Base class of every expected, user-facing failure."""


class ConfigError(PipelineError, ValueError):
    """A config value that the workflow cannot run with (the message names the key path)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(one_line(str(message)))
