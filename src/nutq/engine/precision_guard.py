"""Warn when a configured precision is one the measurements say deviates too far from fp32.

`nutq eval precision` writes `precision.json` into the model directory; `TTS` calls `check` at
load. With that file, a T3 precision whose mean KL or top-1 agreement, or a flow/HiFT precision
whose SNR, crosses the thresholds below for a language is named in a warning. Without it, int8
and int4 T3 are warned about anyway: the only published Arabic measurement of this model family
(soniqo/speech-core PR #88) found int8 T3 diverging on Arabic, so quantized T3 is not assumed safe
until measured on the checkpoint. Recommended settings (docs in README, "Export and quantization"):
T3 in fp32 or bf16, flow and HiFT in fp32 or bf16 (fp16 flow when its SNR is measured fine).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

__all__ = ["MEASURED_FILE", "T3_MAX_KL", "T3_MIN_TOP1", "MIN_SNR_DB", "check"]

MEASURED_FILE = "precision.json"
T3_MAX_KL = 0.05  # nats, mean over the steps
T3_MIN_TOP1 = 0.95
MIN_SNR_DB = 30.0

log = logging.getLogger("nutq.precision")


def check(model_dir: str | Path, t3_dtype: str | None, flow_dtype: str | None) -> list[str]:
    """The warnings for this configuration (also logged); [] when nothing crosses a threshold."""
    path = Path(model_dir) / MEASURED_FILE
    found = json.loads(path.read_text()) if path.is_file() else None
    out = []
    if found is None:
        if t3_dtype in ("int8", "int4"):
            out.append(f"T3 in {t3_dtype} is not measured on this checkpoint (no {MEASURED_FILE}) and was reported "
                       "to diverge on Arabic; run `nutq eval precision` (recommended: fp32 or bf16 T3)")
    else:
        for lang, rows in found.get("t3", {}).items():
            m = rows.get(t3_dtype or "fp32")
            if m and (m["kl_mean"] > T3_MAX_KL or m["top1_agreement"] < T3_MIN_TOP1):
                out.append(f"T3 in {t3_dtype} deviates from fp32 on {lang}: mean KL {m['kl_mean']:.3g} nats, "
                           f"top-1 agreement {m['top1_agreement']:.2f} (thresholds {T3_MAX_KL}, {T3_MIN_TOP1})")
        for lang, rows in found.get("flow", {}).items():
            snr = rows.get(flow_dtype or "fp32")
            if snr is not None and snr < MIN_SNR_DB:
                out.append(f"the flow in {flow_dtype} has a mel SNR of {snr:.1f} dB vs fp32 on {lang} "
                           f"(threshold {MIN_SNR_DB} dB)")
    for msg in out:
        log.warning(msg)
    return out
