"""Every user-facing failure is a CimcError: its message says what was wrong, where, and what to do.

The CLI prints ``str(error)`` without a traceback and exits non-zero.
"""

from __future__ import annotations


class CimcError(Exception):
    """Base class of all errors meant for the user."""


class ParseError(CimcError):
    """Textual IR that does not parse; the message starts with ``file:line:col``."""


class VerifyError(CimcError):
    """IR that is structurally wrong (undefined value, wrong arity, illegal op at this stage, ...)."""


class FrontendError(CimcError):
    """An ONNX model that cannot be imported (invalid file, unsupported ops, dynamic shapes)."""


class PassError(CimcError):
    """A pass failed or left invalid IR; the message names the pass and the ones before it."""


class TargetError(CimcError):
    """A target description that is missing or does not match the schema."""


class ArtifactError(CimcError):
    """An artifact that is missing, tampered with, or of an unknown format version."""


class RuntimeInputError(CimcError):
    """Inputs given to a chip instance that do not match the artifact's inputs."""


def check_seed(seed: object, what: str = "seed") -> int:
    """A seed as an int: a non-negative integer (numpy's seeding rule), never truncated."""
    import numbers

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise CimcError(f"{what} must be an integer >= 0, got {seed!r}")
    return int(seed)
