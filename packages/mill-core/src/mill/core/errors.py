"""Errors are part of the interface: one exception per kind of user mistake.

Every message says what was wrong, where (file, key, shard, sample) and what to do. The CLI
prints ``str(error)`` and exits non-zero; tracebacks are for bugs, not for user mistakes.
"""

from __future__ import annotations


class MillError(Exception):
    """Base of every error caused by user input or environment rather than a bug in Mill."""


class SpecError(MillError):
    """A benchmark spec file is malformed: syntax, unknown key, wrong type, missing file."""


class UnknownBenchmarkError(MillError):
    """No spec declares the requested benchmark or variant."""


class ModelSpecError(MillError):
    """A model spec string (``backend[key=value,...]``) or model TOML file cannot be parsed."""


class UnknownBackendError(MillError):
    """No installed distribution provides the requested backend."""


class BackendArgumentError(MillError):
    """A backend was given an argument it does not accept, or a value it cannot use."""


class SettingError(MillError):
    """A run setting (seed, limit, batch size, workers) is out of the range Mill can run and store."""


class ModelNotFoundError(MillError):
    """The model path or checkpoint named in the model spec does not exist."""


class CapabilityError(MillError):
    """The model can serve none of the benchmark's variants."""


class DataError(MillError):
    """The dataset is missing, incomplete, or holds a sample that cannot be read."""


class ResultsError(MillError):
    """The output directory cannot be written, or holds results Mill cannot read."""


class ResultsWriteError(ResultsError):
    """A results file could not be written (a full disk, a quota, a read-only filesystem): the run ends.

    ``path`` is the file that could not be written; the engine adds how many samples are committed.
    """

    def __init__(self, path: object, error: OSError) -> None:
        self.path = path
        self.reason = error.strerror or str(error)
        super().__init__(f"cannot write {path} ({self.reason})")


class DamagedResultsError(ResultsError):
    """A results file does not match what Mill wrote (``aggregate.csv`` truncated, edited, half copied)."""


class MillWarning(UserWarning):
    """Something the user should know that does not stop the command (a damaged chunk set aside and recomputed).

    The CLI prints it as one ``warning:`` line.
    """


class NonFiniteError(MillError):
    """A model produced numbers that cannot be right (NaN or infinity), which would make its scores silently wrong."""


class OutOfMemoryError(MillError):
    """The accelerator ran out of memory even one sample at a time."""
