"""One exception root for the whole tool.

Expected outcomes (bad input, a missing profile, incompatible models, an empty search
space, an unreachable server) derive from :class:`ConfigSpecError`; the CLI prints their
message on one line and exits non-zero. Anything else is a bug and keeps its traceback.
Messages name the offending value and, where there is one, the fix.
"""

from __future__ import annotations


class ConfigSpecError(Exception):
    """Root of every expected failure. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InvalidInput(ConfigSpecError, ValueError):
    """A user-supplied value is out of range or malformed (e.g. ``K=0 is out of range``)."""

    exit_code = 2


class ProfileError(ConfigSpecError):
    """A profile file exists but cannot be used (malformed, wrong schema version, stale)."""

    exit_code = 3


class ProfileMissing(ProfileError):
    """A profile the operation needs has not been taken yet; the message says which to run."""

    exit_code = 4


class IncompatibleModels(ConfigSpecError):
    """A drafter cannot be paired with a target (e.g. their tokenizers differ)."""

    exit_code = 5


class NoFeasibleConfig(ConfigSpecError):
    """The search space is empty after constraints; not a bug, a result to report."""

    exit_code = 6


class ModelFileError(ConfigSpecError):
    """A model file is missing, not GGUF, corrupt, or of an unknown quantisation."""

    exit_code = 7


class BackendUnavailable(ConfigSpecError):
    """An inference backend or remote server cannot be reached or does not speak the API."""

    exit_code = 8


class MeterError(ConfigSpecError):
    """A power meter is unknown, absent, or unreadable (the message names the file)."""

    exit_code = 9


class SloInfeasible(NoFeasibleConfig):
    """A fleet class cannot meet its SLO; the message names the class and by how much."""
