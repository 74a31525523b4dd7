"""Exception types of the PCFG subpackage.

Every error raised on bad user input is a :class:`PcfgError`, so the CLI can turn
it into one clear line without a traceback.
"""

from __future__ import annotations


class PcfgError(Exception):
    """Base class for user-facing errors of :mod:`pipeline_lib.pcfg`."""


class GrammarError(PcfgError):
    """A grammar file or rule set is malformed or violates a validation rule.

    The message always starts with ``<source>:<line>:`` so a user can jump to it.
    """

    def __init__(self, source: str, line: int, message: str) -> None:
        self.source = source
        self.line = line
        self.detail = message
        super().__init__(f"{source}:{line}: {_capped(message)}")


# An error quotes what it complains about, but never a whole 2 MB rule: enough to find it.
MAX_QUOTED = 300


def _capped(text: str) -> str:
    if len(text) <= MAX_QUOTED:
        return text
    return f"{text[:MAX_QUOTED]}... ({len(text)} characters)"


class UnknownWordError(PcfgError):
    """A sentence contains a word that is not a terminal of the grammar."""


class InputFormatError(PcfgError):
    """An input file (sentences, vocabulary, ...) is malformed."""


class SamplingError(PcfgError):
    """The sampler could not produce a sentence within its limits."""
