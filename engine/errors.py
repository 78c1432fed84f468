"""Errors the engine raises for bad input: each says what is wrong, where, and how to fix it."""

from __future__ import annotations


class MetaStudioError(Exception):
    """Base class of every user-facing engine error.

    Attributes:
        field: the config key or input (e.g. ``"k_shot"``, ``"dataset"``) the problem concerns, or None.
        hint: one sentence on how to fix it, or None.
    """

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        self.field = field
        self.hint = hint
        self.message = message
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        fix = f" {self.hint}" if self.hint else ""
        return f"{where}{self.message}{fix}"


class ConfigError(MetaStudioError):
    """An experiment config value is missing, malformed or inconsistent with another."""


class DataError(MetaStudioError):
    """A data set cannot be read, or cannot supply the episodes the config asks for."""


class ModelLoadError(MetaStudioError):
    """A base model cannot be found or loaded (missing folder, not cached while offline, ...)."""


class DeviceError(MetaStudioError):
    """The requested device (cuda / mps) is not available on this machine."""


class DivergenceError(MetaStudioError):
    """A loss became NaN or inf during meta-training."""


class StoreError(MetaStudioError):
    """The run database cannot be opened or written (read-only folder, disk full, ...)."""


class MemoryExhaustedError(MetaStudioError):
    """Training ran out of GPU or CPU memory; the message says how to need less.

    Raised after the run is stored as ``failed`` and its memory released, so the next run can start in
    the same process.
    """
