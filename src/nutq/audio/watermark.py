"""Resemble's Perth watermark, as the official Chatterbox pipeline applies it to every output.

Perth (`resemble-perth`, MIT) hides an imperceptible neural watermark in the magnitude spectrum
(below 2 kHz, at 32 kHz internally) so that generated speech can later be recognised as such with
`Watermarker.detect`. It is an optional dependency (`pip install "nutq[watermark]"`): the
package declares no requirements of its own but imports torchaudio, librosa, scipy and
`pkg_resources` (setuptools < 81) at run time, several hundred MB in all, so nutq never needs it to
synthesize.

nutq calls the same network the official package calls (`perth.PerthImplicitWatermarker`); the
only change is that the output is cut back, or completed with the input's own last samples, to the
input length: Perth's resample -> STFT -> iSTFT round trip drops up to ~10 ms at the end (the
official returns the shorter signal), and nutq promises exactly 960 samples per speech token.
"""

from __future__ import annotations

import contextlib
import functools
import io
import threading
import warnings

import numpy as np

from ..errors import NutqError

__all__ = ["WatermarkUnavailable", "Watermarker", "available", "default_watermarker", "watermarker_for"]

INSTALL_HINT = 'pip install "nutq[watermark]"'


class WatermarkUnavailable(NutqError, RuntimeError):
    """A watermark was asked for but resemble-perth (or one of its run-time imports) is missing."""


def _import_perth_watermarker():
    """The official watermarker class, or an ImportError that names what is missing."""
    with warnings.catch_warnings():
        # perth imports pkg_resources, which warns that it is deprecated on every import.
        warnings.simplefilter("ignore")
        # perth.__init__ swallows the ImportError of its network (leaving the name None), so import
        # the module itself to learn which dependency is missing.
        from perth.perth_net.perth_net_implicit.perth_watermarker import PerthImplicitWatermarker
    return PerthImplicitWatermarker


@functools.cache
def _probe() -> str | None:
    """None if Perth's watermarker imports, else why not (cached: importing perth costs ~1 s)."""
    try:
        _import_perth_watermarker()
    except ImportError as e:
        return str(e)
    return None


def available() -> bool:
    """True when resemble-perth and its run-time dependencies import."""
    return _probe() is None


def _require() -> None:
    reason = _probe()
    if reason is not None:
        raise WatermarkUnavailable(f"the Perth watermark needs resemble-perth and its dependencies ({reason}); "
                                   f"install them with {INSTALL_HINT} or pass watermark=False "
                                   f"(nutq speak --no-watermark)")


class Watermarker:
    """Perth's implicit watermarker; the 37 MB network loads on first use and is kept.

    `apply`/`detect` may be called from several threads: the network is stateless at inference
    and loading is guarded by a lock.
    """

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._impl = None
        self._lock = threading.Lock()

    def _loaded(self):
        with self._lock:
            if self._impl is None:
                _require()
                cls = _import_perth_watermarker()
                # Perth prints a line when its checkpoint loads; nutq's stdout is for results.
                with contextlib.redirect_stdout(io.StringIO()):
                    self._impl = cls(device=self.device)
            return self._impl

    def apply(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """(N,) float audio at `sr` Hz -> (N,) float32 watermarked audio of the same length."""
        import torch

        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"watermark expects mono (N,) audio, got shape {wav.shape}")
        if wav.size == 0:
            return wav
        impl = self._loaded()
        with torch.inference_mode():
            out = np.asarray(impl.apply_watermark(wav, sample_rate=int(sr)), dtype=np.float32)
        if out.size >= wav.size:
            return out[: wav.size]
        # The round trip dropped the last few ms: keep them unmarked rather than silence them.
        return np.concatenate([out, wav[out.size:]])

    def detect(self, wav: np.ndarray, sr: int) -> float:
        """Perth's decoder output in [0, 1]: near 1 on marked audio; Perth itself rounds it (>= 0.5: marked)."""
        import torch

        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError(f"watermark detection expects non-empty mono (N,) audio, got shape {wav.shape}")
        impl = self._loaded()
        with torch.inference_mode():
            return float(np.asarray(impl.get_watermark(wav, sample_rate=int(sr), round=False)).mean())


@functools.cache
def default_watermarker() -> Watermarker:
    """One CPU watermarker per process, so the network loads once however many TTS objects exist."""
    return Watermarker()


def watermarker_for(watermark: bool | None) -> Watermarker | None:
    """The watermarker a synthesis call should use.

    None: the default one when Perth is installed, else none (silently, as an optional feature);
    True: required, so a missing install is a `WatermarkUnavailable` error now rather than after
    synthesis; False: none.
    """
    if watermark is None:
        return default_watermarker() if available() else None
    if not watermark:
        return None
    _require()
    return default_watermarker()
