"""Error types every layer may raise (the ground floor: imports nothing of the package).

The CLI turns each of these into one line on stderr and a non-zero exit; a Python traceback
reaching a user means a bug, not bad input.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every expected, user-facing failure."""


class ConfigError(PipelineError, ValueError):
    """A config value that the workflow cannot run with (the message names the key path)."""
