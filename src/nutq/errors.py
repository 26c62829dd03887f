"""Every exception class in nutq derives from `NutqError`. No imports.

What the caller can act on decides the branch, and the server's status code follows from it:

    ClientError       the request is wrong (text, option, voice, language): fix it (HTTP 400)
    UnavailableError  an optional part this install or server lacks (diacritizer, watermark): 400
    BusyError         every slot and queue place is taken: retry shortly (HTTP 429, Retry-After)
    EngineError       an engine invariant broke: nutq's fault, never the caller's (HTTP 500)
    CheckpointError / WeightLoadError   the model files are missing or do not match

Exceptions that are not `NutqError`s (a plain ValueError from deep inside torch, say) are
unexpected: the server logs them with the request id and answers 500.
"""


class NutqError(Exception):
    """Base of every nutq exception."""


class ClientError(NutqError, ValueError):
    """The caller asked for something invalid; the same request will fail again."""


class UnavailableError(NutqError, RuntimeError):
    """An optional component (an extra, a model file) that this request needs is not installed."""


class BusyError(NutqError, RuntimeError):
    """No capacity now; the same request may succeed shortly."""


class EngineError(NutqError, RuntimeError):
    """An engine invariant was violated (a bug, or the engine shut down under the request)."""


class CheckpointError(NutqError, RuntimeError):
    """A checkpoint directory or download is missing, incomplete or corrupt."""


class WeightLoadError(NutqError, RuntimeError):
    """Names or shapes in a weight file do not match the model."""
