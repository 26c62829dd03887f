"""The data tools' user-facing error."""

from ...errors import NutqError


class DataError(NutqError, ValueError):
    """A manifest, audio file, corpus or prepared dataset that cannot be used as asked."""
