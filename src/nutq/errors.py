"""Exceptions users are meant to see (the CLI prints them without a traceback). No imports."""


class NutqError(Exception):
    """Base of nutq's user-facing errors."""


class CheckpointError(NutqError, RuntimeError):
    """A checkpoint directory or download is missing, incomplete or corrupt."""


class WeightLoadError(NutqError, RuntimeError):
    """Names or shapes in a weight file do not match the model."""
