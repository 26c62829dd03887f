"""Resemble's Perth watermark, as the official Chatterbox pipeline applies it to every output.

Perth (`resemble-perth`, MIT) hides an imperceptible neural watermark in the magnitude spectrum
(below 2 kHz, at 32 kHz internally) so that generated speech can later be recognised as such with
`Watermarker.detect`. nutq runs Perth's network with its own code (`nutq.audio.perth`) and takes
only the trained weights from the installed `resemble-perth` wheel, so the `watermark` extra is
`resemble-perth` alone. Why not import Perth itself: the wheel declares no requirements but
imports torchaudio, librosa, scipy and `pkg_resources` at run time (~450 MB, and on a CPU torch
wheel the torchaudio that pip picks cannot load its compiled library, an OSError that Perth does
not catch). Reading its weight file needs none of them, and nutq never imports `perth`.

Availability, decided once per process when a watermark is first wanted:
- resemble-perth not installed: no watermark, silently (it is an optional extra);
- installed but unusable (weight file missing or unreadable, other hyperparameters): one
  warning in the log, then unmarked audio;
- either way, `watermark=True` is a `WatermarkUnavailable` error that says why and what to do.

The marked signal is cut back, or completed with the input's own last samples, to the input
length: Perth's resample -> STFT -> iSTFT round trip drops up to ~10 ms at the end (the official
returns the shorter signal), and nutq promises exactly 960 samples per speech token.
"""

from __future__ import annotations

import functools
import logging
import threading
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import NutqError, UnavailableError

__all__ = ["WatermarkUnavailable", "Watermarker", "available", "default_watermarker", "watermarker_for"]

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "nutq[watermark]"'
DISTRIBUTION = "resemble-perth"
CHECKPOINT_DIR = "perth/perth_net/pretrained/implicit"  # inside the wheel: hparams.yaml, perth_net_<step>.pth.tar


class WatermarkUnavailable(UnavailableError):
    """A watermark was asked for but resemble-perth's weights are not installed or not usable."""


class _Broken(NutqError):
    """resemble-perth is installed but its checkpoint cannot be used (the message says why)."""


def checkpoint_dir() -> Path | None:
    """Where the installed resemble-perth keeps Perth's checkpoint; None when it is not installed."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    return Path(dist.locate_file(CHECKPOINT_DIR))


def _read_hparams(path: Path) -> dict[str, str]:
    """The flat `key: value` lines of Perth's hparams.yaml (all it holds), without a YAML parser."""
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def load_network(folder: Path):
    """Perth's network from its checkpoint folder, on the CPU. Raises `_Broken` saying why not."""
    import torch

    from .perth import HPARAMS, PerthNet

    source = folder / "hparams.yaml"
    try:
        hp = _read_hparams(source)
        changed = {k: hp.get(k) for k, v in HPARAMS.items() if hp.get(k) is None or type(v)(hp[k]) != v}
        if changed:
            raise _Broken(f"{folder / 'hparams.yaml'} describes another network ({changed}); nutq runs {HPARAMS}")
        # Perth loads the checkpoint with the highest step, as we do.
        files = sorted(folder.glob("perth_net_*.pth.tar"), key=lambda p: int(p.name.split("_")[-1].split(".")[0]))
        if not files:
            raise _Broken(f"no perth_net_*.pth.tar in {folder}")
        source = files[-1]
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)["model"]
        except Exception as e:  # noqa: BLE001 - torch's own message runs to a page
            raise _Broken(f"{source} is not a readable torch checkpoint ({type(e).__name__})") from None
        net = PerthNet()
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("ap.")}, strict=True)
        window, inverse = state["ap.spectrogram.window"], state["ap.inv_spectrogram.window"]
        if not torch.equal(window, inverse) or window.shape != net.window.shape:
            raise _Broken(f"{source}: unexpected STFT windows")
        net.window.copy_(window)
    except _Broken:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable or mismatched file: say which and why
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        raise _Broken(f"cannot load Perth's checkpoint {source}: {type(e).__name__}: {first_line}") from None
    return net.eval()


@functools.cache
def _network():
    """(network, None) or (None, why not, installed?). Cached: loading reads a 37 MB file."""
    folder = checkpoint_dir()
    if folder is None:
        return None, f"{DISTRIBUTION} is not installed", False
    try:
        return load_network(folder), None, True
    except _Broken as e:
        return None, str(e), True


@functools.cache
def _warn_unusable(reason: str) -> None:
    log.warning("the Perth watermark is off: %s; output is not watermarked (reinstall with %s)", reason, INSTALL_HINT)


def available() -> bool:
    """True when resemble-perth is installed and its network loads."""
    return _network()[0] is not None


def _require():
    net, reason, _ = _network()
    if net is None:
        raise WatermarkUnavailable(f"the Perth watermark is unavailable: {reason}; install it with {INSTALL_HINT} "
                                   f"or pass watermark=False (nutq speak --no-watermark)")
    return net


class Watermarker:
    """Perth's implicit watermarker and detector, on the CPU.

    `apply`/`detect` may be called from several threads: the network is stateless at inference
    and is loaded once per process (under a lock).
    """

    _lock = threading.Lock()

    def _net(self):
        with self._lock:
            return _require()

    def apply(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """(N,) float audio at `sr` Hz -> (N,) float32 watermarked audio of the same length."""
        from .perth import mark

        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"watermark expects mono (N,) audio, got shape {wav.shape}")
        if wav.size == 0:
            return wav
        out = mark(self._net(), wav, int(sr)).astype(np.float32, copy=False)
        if out.size >= wav.size:
            return out[: wav.size]
        # The round trip dropped the last few ms: keep them unmarked rather than silence them.
        return np.concatenate([out, wav[out.size:]])

    def detect(self, wav: np.ndarray, sr: int) -> float:
        """Perth's detector score in [0, 1]: near 1 on marked audio; Perth itself rounds it (>= 0.5: marked)."""
        from .perth import score

        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError(f"watermark detection expects non-empty mono (N,) audio, got shape {wav.shape}")
        return score(self._net(), wav, int(sr))


@functools.cache
def default_watermarker() -> Watermarker:
    """One watermarker per process, however many TTS objects exist."""
    return Watermarker()


def watermarker_for(watermark: bool | None) -> Watermarker | None:
    """The watermarker a synthesis call should use.

    None: the default one when Perth's weights are usable, else none (silently when resemble-perth
    is not installed, with one logged warning when it is installed but unusable); True: required,
    so an unavailable watermark is a `WatermarkUnavailable` error now rather than after synthesis;
    False: none.
    """
    if watermark is None:
        net, reason, installed = _network()
        if net is None:
            if installed:
                _warn_unusable(reason)
            return None
        return default_watermarker()
    if not watermark:
        return None
    _require()
    return default_watermarker()
