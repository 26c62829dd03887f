"""Held-out loss and speech-token accuracy of a T3, overall and per dialect."""

from __future__ import annotations

from collections import defaultdict

import torch

from ...models.t3 import T3
from .batch import collate
from .loss import t3_losses

__all__ = ["heldout_metrics"]


def heldout_metrics(model: T3, dataset, *, batch_size: int = 4, objective: str = "next") -> dict[str, dict]:
    """{"all": {...}, "<dialect>": {...}} with `loss` (text + speech CE, each a token-weighted
    mean), `speech_loss`, `text_loss`, `speech_acc` (top-1 of the scored speech tokens), `n`
    utterances and `speech_tokens`. Runs in the model's current mode; call under no_grad."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))], model.cfg)
        out = t3_losses(model, batch, objective)
        for row, dialect in enumerate(batch.dialects):
            for key in ("all", dialect):
                s = sums[key]
                s["n"] += 1
                s["text_sum"] += float(out.text_sum[row])
                s["text_count"] += float(out.text_count[row])
                s["speech_sum"] += float(out.speech_sum[row])
                s["speech_count"] += float(out.speech_count[row])
                s["speech_correct"] += float(out.speech_correct[row])
    report = {}
    for key, s in sums.items():
        text = s["text_sum"] / max(s["text_count"], 1)
        speech = s["speech_sum"] / max(s["speech_count"], 1)
        report[key] = {"loss": text + speech, "text_loss": text, "speech_loss": speech,
                       "speech_acc": s["speech_correct"] / max(s["speech_count"], 1), "n": int(s["n"]),
                       "speech_tokens": int(s["speech_count"])}
    return report


def flat(report: dict[str, dict]) -> dict[str, float]:
    """The `all` row as flat scalars plus `<dialect>/loss` and `<dialect>/speech_acc`, for logs."""
    out = {k: v for k, v in report["all"].items() if k != "n"}
    for dialect, row in report.items():
        if dialect != "all":
            out[f"{dialect}/loss"] = row["loss"]
            out[f"{dialect}/speech_acc"] = row["speech_acc"]
    return out
